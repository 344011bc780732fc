// Helpers for tests of budgets and RuntimeService: clients that send a given credential,
// executions that hand their own execution credential (AMCTL_TOKEN) back to the test, and
// budgets that are generous everywhere but in the dimensions under test.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "vitest";
import { BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { ErrorInfoSchema, type ErrorInfo } from "../../src/gen/google/rpc/error_details_pb.js";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { PolicyService } from "../../src/gen/agentmachine/v1/policy_service_pb.js";
import { ProfileService } from "../../src/gen/agentmachine/v1/profile_service_pb.js";
import { RuntimeService } from "../../src/gen/agentmachine/v1/runtime_service_pb.js";
import { OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../src/model/transitions.js";
import { budgetDimensions, type BudgetDimensionName } from "../../src/model/budget-dimensions.js";
import { bearer, fullScope, mintRoot, operatorOf } from "./auth.js";
import { execution, requestId, waitForEnd, type OperationsClient } from "./operations.js";

export type BudgetInit = MessageInitShape<typeof BudgetSchema>;

/** Clients of every service that send `token`. */
export function clientsFor(url: string, token: string) {
  const transport = createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] });
  return {
    operations: createClient(OperationService, transport) as OperationsClient,
    delegations: createClient(DelegationService, transport),
    runtime: createClient(RuntimeService, transport),
    profiles: createClient(ProfileService, transport),
    policy: createClient(PolicyService, transport),
  };
}
export type Clients = ReturnType<typeof clientsFor>;
export type RuntimeClient = Client<typeof RuntimeService>;

export async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal"),
      (e: unknown) => e,
    ),
  );
}

export function errorInfo(error: ConnectError): ErrorInfo | undefined {
  return error.findDetails(ErrorInfoSchema)[0];
}

/** A budget of 2^40 in every dimension (agentConcurrency 100) but those `overrides` set: far more than any test spends. */
export function roomyBudget(overrides: BudgetInit = {}): Budget {
  const budget = create(BudgetSchema);
  for (const dimension of budgetDimensions) budget[dimension] = dimension === "agentConcurrency" ? 100n : 1n << 40n;
  return Object.assign(budget, overrides);
}

/**
 * Clients with a root credential (of the server's operator key) whose budget is 2^60 in every
 * dimension, so that a test can carve as many roomy children out of it as it likes.
 */
export async function wideRoot(url: string, dataDir: string): Promise<Clients> {
  const budget = create(BudgetSchema);
  for (const dimension of budgetDimensions) budget[dimension] = 1n << 60n;
  const token = await mintRoot(await operatorOf(dataDir), { subject: "wide-root", scope: { ...fullScope, budget } });
  return clientsFor(url, token);
}

/** Every operation type an agent's delegation needs in these tests: executions, cancels, grants, bindings. */
export const agentOperationTypes = [
  OperationType.EXECUTION_START,
  OperationType.EXECUTION_CANCEL,
  OperationType.TOOL_GRANT_APPLY,
  OperationType.TOOL_GRANT_REVOKE,
  OperationType.MODEL_PROVIDER_BIND,
];

/** Issues a child of `parent` for every profile, tool and provider, with `budget`. */
export async function issueAgent(parent: Clients, url: string, subject: string, budget: BudgetInit, mayDelegate = false) {
  const { delegation, token } = await parent.delegations.issueDelegation({
    subject,
    scope: { operationTypes: agentOperationTypes, profiles: ["*"], tools: ["*"], modelProviders: ["*"], budget, mayDelegate },
  });
  return { delegation: delegation!, token, clients: clientsFor(url, token) };
}

/** Sleeps (well past any test) once it has written its execution credential to `token` in its workspace. */
export const CREDENTIAL_SLEEPER = [
  process.execPath,
  "-e",
  "const fs = require('fs'); fs.writeFileSync('token.tmp', process.env.AMCTL_TOKEN); fs.renameSync('token.tmp', 'token'); setTimeout(() => {}, 120000)",
];

export function workspaceOf(dataDir: string, name: string): string {
  return join(dataDir, "workspaces", name.replace("operations/", ""));
}

export interface RunningExecution {
  operation: Operation;
  /** The attempt's own execution credential. */
  token: string;
  runtime: RuntimeClient;
  clients: Clients;
}

/** Submits a CREDENTIAL_SLEEPER execution in `profile` and waits for its execution credential. */
export async function startCredentialed(
  url: string,
  dataDir: string,
  submitter: OperationsClient,
  profile: string,
  budget?: BudgetInit,
  labels: Record<string, string> = {},
): Promise<RunningExecution> {
  const { operation } = await submitter.submitOperation({ ...execution(profile, CREDENTIAL_SLEEPER, {}, budget), labels });
  const tokenFile = join(workspaceOf(dataDir, operation!.name), "token");
  // Polled by hand, not with expect.poll, so that it works in beforeAll too.
  for (const deadline = Date.now() + 15_000; !existsSync(tokenFile); await new Promise((resolve) => setTimeout(resolve, 20))) {
    const { operation: now } = await submitter.getOperation({ name: operation!.name });
    if (isTerminal(now!.state) || Date.now() > deadline) throw new Error(`${operation!.name} never wrote its credential (state ${TaskState[now!.state]})`);
  }
  const token = readFileSync(tokenFile, "utf8");
  const clients = clientsFor(url, token);
  return { operation: operation!, token, runtime: clients.runtime, clients };
}

/** Cancels `name` if it has not ended, and waits for its end. */
export async function cancelAndWait(client: OperationsClient, name: string) {
  const { operation } = await client.getOperation({ name });
  if (operation!.state === TaskState.QUEUED || operation!.state === TaskState.RUNNING || operation!.state === TaskState.RETRYING) {
    await client.cancelOperation({ name }).catch(() => undefined); // it may just have ended
  }
  return waitForEnd(client, name);
}

/** Creates a profile (optionally with a budget) and waits for it. */
export async function createProfileWith(client: OperationsClient, profileId: string, profileType: number, budget?: BudgetInit): Promise<string> {
  const { operation } = await client.submitOperation({
    requestId: requestId("profile"),
    spec: { kind: { case: "profileCreate", value: { profileId, profileType, ...(budget ? { budget } : {}) } } },
  });
  const { operation: done } = await waitForEnd(client, operation!.name);
  expect(done.state).toBe(TaskState.COMPLETED);
  return `profiles/${profileId}`;
}

/** Binds `provider` in the provider profile `profile`. */
export async function bindProvider(client: OperationsClient, profile: string, provider: string): Promise<void> {
  const { operation } = await client.submitOperation({
    requestId: requestId("bind"),
    profile,
    spec: { kind: { case: "modelProviderBind", value: { provider } } },
  });
  expect((await waitForEnd(client, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
}

/** Applies a grant of `tool` in `profile`; returns the grant operation's name. */
export async function applyGrant(client: OperationsClient, profile: string, tool: string): Promise<string> {
  const { operation } = await client.submitOperation({ requestId: requestId("grant"), profile, spec: { kind: { case: "toolGrantApply", value: { tool } } } });
  expect((await waitForEnd(client, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
  return operation!.name;
}

/** The ErrorInfo metadata of a BUDGET_EXCEEDED refusal, with its dimension as a Budget field name. */
export function budgetRefusal(error: ConnectError): { account: string; dimension: BudgetDimensionName; requested: bigint; remaining: bigint } | undefined {
  const info = errorInfo(error);
  if (info?.reason !== "BUDGET_EXCEEDED") return undefined;
  return {
    account: info.metadata.account!,
    dimension: info.metadata.dimension as BudgetDimensionName,
    requested: BigInt(info.metadata.requested!),
    remaining: BigInt(info.metadata.remaining!),
  };
}
