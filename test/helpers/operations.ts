// Helpers for tests of OperationService: a client and small builders of requests.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import type { BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import type { MountSchema, Operation, RetryPolicySchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { OperationService, SubmitOperationRequestSchema, type SubmitOperationRequest } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../src/model/transitions.js";
import { authInterceptors } from "./tokens.js";

export type OperationsClient = Client<typeof OperationService>;
export type SubmitInit = MessageInitShape<typeof SubmitOperationRequestSchema>;

export function operationsClient(baseUrl: string): OperationsClient {
  return createClient(OperationService, createGrpcTransport({ baseUrl, interceptors: authInterceptors(baseUrl) }));
}

let sequence = 0;
export function requestId(prefix = "req"): string {
  sequence += 1;
  return `${prefix}-${process.pid}-${Date.now()}-${sequence}`;
}

export async function createProfile(client: OperationsClient, profileId: string, profileType = ProfileType.PERSONAL): Promise<string> {
  const { operation } = await client.submitOperation({
    requestId: requestId("profile"),
    spec: { kind: { case: "profileCreate", value: { profileId, profileType } } },
  });
  await waitForEnd(client, operation!.name);
  return `profiles/${profileId}`;
}

interface ExecutionInit {
  workingDirectory?: string;
  env?: Record<string, string>;
  retryPolicy?: MessageInitShape<typeof RetryPolicySchema>;
  workerSelector?: Record<string, string>;
  mounts?: MessageInitShape<typeof MountSchema>[];
}

/** An execution_start request; `options` sets further fields of the spec and the budget. */
export function execution(
  profile: string,
  argv: string[],
  options: ExecutionInit = {},
  requestedBudget?: MessageInitShape<typeof BudgetSchema>,
): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, {
    requestId: requestId("exec"),
    profile,
    spec: { kind: { case: "executionStart", value: { argv, ...options } } },
    requestedBudget,
  });
}

/** Whether a process exists and is not a zombie (a container's PID 1 may never reap orphans). */
export function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/**
 * Host pids of the processes an execution started, found by the AMCTL_OPERATION variable the
 * server puts in every execution's environment (read from /proc/PID/environ: the test runs as
 * root). Works inside a sandbox too, whose processes have other pids in their namespace.
 */
export function processesOf(operation: string): number[] {
  const marker = Buffer.from(`\0AMCTL_OPERATION=${operation}\0`);
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || !isAlive(Number(entry))) continue;
    try {
      if (Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${entry}/environ`)]).includes(marker)) found.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

/** A live process's command line, its arguments joined by spaces (e.g. "sleep 30"); undefined once it is gone. */
export function commandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0$/, "").split("\0").join(" ");
  } catch {
    return undefined;
  }
}

/** Follows an operation to its terminal event; returns every event and the final operation. */
export async function waitForEnd(client: OperationsClient, name: string, timeoutMs = 20_000): Promise<{ events: OperationEvent[]; operation: Operation }> {
  const events: OperationEvent[] = [];
  for await (const { event } of client.watchOperation({ name }, { timeoutMs })) events.push(event!);
  const { operation } = await client.getOperation({ name });
  if (!isTerminal(operation!.state)) throw new Error(`${name} ended its watch without a terminal state`);
  return { events, operation: operation! };
}

/** Submits and follows to the end. */
export async function run(client: OperationsClient, request: SubmitInit) {
  const { operation } = await client.submitOperation(request);
  return waitForEnd(client, operation!.name);
}

/** Waits until no operation is queued, running or retrying. */
export async function quiescent(client: OperationsClient, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { operations } = await client.listOperations({ pageSize: 5, filter: { states: [TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING] } });
    if (operations.length === 0) return;
    if (Date.now() > deadline) throw new Error(`not quiescent after ${timeoutMs} ms: ${operations.map((o) => `${o.name} ${TaskState[o.state]}`).join(", ")}`);
    await sleep(30);
  }
}
