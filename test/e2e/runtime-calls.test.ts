// RuntimeService end to end: a running execution asks, with its own execution credential
// (AMCTL_TOKEN), before each model, connector or tool call. Calls are charged atomically to
// the operation's budget; one that would overspend is denied and ends the task failed naming
// the dimension; crossing 80 % warns once; ReportUsage reconciles each ticket once, and a report
// past the budget charges the delegations and the profile no more than the budget. Nobody
// else's credential may ask for the execution, and its own is worthless once the task ends.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension, BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import type { AuthorizeCallResponse } from "../../src/gen/agentmachine/v1/runtime_service_pb.js";
import { CallKind } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { EventType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { budgetDimensions } from "../../src/model/budget-dimensions.js";
import { fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { execution, waitForEnd } from "../helpers/operations.js";
import {
  bindProvider,
  budgetRefusal,
  cancelAndWait,
  clientsFor,
  createProfileWith,
  errorInfo,
  issueAgent,
  refusal,
  roomyBudget,
  startCredentialed,
  workspaceOf,
  type BudgetInit,
  type Clients,
  type RunningExecution,
} from "../helpers/runtime.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
let root: Clients;
let profile: string;

const PROVIDER = "ollama";
const modelCall = (estimatedTokens: bigint) => ({ kind: CallKind.MODEL, modelProvider: PROVIDER, estimatedTokens });
const connectorCall = { kind: CallKind.CONNECTOR, connector: "issue-tracker" };

function start(budget?: BudgetInit): Promise<RunningExecution> {
  return startCredentialed(server.url, server.dataDir, root.operations, profile, budget);
}

async function authorize(exec: RunningExecution, call: ReturnType<typeof modelCall> | typeof connectorCall): Promise<AuthorizeCallResponse> {
  return exec.runtime.authorizeCall({ operation: exec.operation.name, call });
}

/** The field a refusal's validation detail names. */
function violatedField(error: ConnectError): string | undefined {
  return error
    .findDetails(ViolationsSchema)[0]
    ?.violations[0]?.field?.elements.map((e) => e.fieldName)
    .join(".");
}

beforeAll(async () => {
  server = await startTestServer({ maxConcurrentExecutions: 8 });
  root = clientsFor(server.url, server.token);
  profile = await createProfileWith(root.operations, "dev", ProfileType.PERSONAL);
  await bindProvider(root.operations, await createProfileWith(root.operations, "local-models", ProfileType.LOCAL_MODEL_PROVIDER), PROVIDER);
});
afterAll(() => server.close());

describe("charging", () => {
  it("allows exactly as many of 50 concurrent model calls as the modelCalls budget holds, then ends the task failed naming MODEL_CALLS", async () => {
    const exec = await start({ modelCalls: 20n, tokens: 10_000n });
    const answers = await Promise.all(
      Array.from({ length: 50 }, () =>
        authorize(exec, modelCall(10n)).then(
          (r) => r,
          (e: unknown) => ConnectError.from(e),
        ),
      ),
    );
    const allowed = answers.filter((a): a is AuthorizeCallResponse => !(a instanceof ConnectError) && a.allowed);
    expect(allowed).toHaveLength(20);
    // Each allowed call saw its own charge: what remained after it counts down 19…0.
    expect(allowed.map((a) => Number(a.remaining!.modelCalls)).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(new Set(allowed.map((a) => a.callTicket)).size).toBe(20);
    const denied = answers.filter((a) => a instanceof ConnectError || !a.allowed);
    // The first call over the budget is told so; later ones may find the task already ending
    // (not running) or its credential already retired.
    expect(denied.some((a) => !(a instanceof ConnectError) && a.exhaustedDimension === BudgetDimension.MODEL_CALLS)).toBe(true);
    for (const answer of denied) {
      if (answer instanceof ConnectError) expect([Code.FailedPrecondition, Code.Unauthenticated]).toContain(answer.code);
      else expect(answer).toMatchObject({ allowed: false, exhaustedDimension: BudgetDimension.MODEL_CALLS, callTicket: "" });
    }

    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.MODEL_CALLS },
      usage: { modelCalls: 20n, tokens: 200n },
    });
  });

  it("charges a connector call one connector call and leaves model calls and tokens alone", async () => {
    const exec = await start({ connectorCalls: 5n, modelCalls: 7n, tokens: 70n });
    const answer = await authorize(exec, connectorCall);
    expect(answer).toMatchObject({ allowed: true, callTicket: "", remaining: { connectorCalls: 4n, modelCalls: 7n, tokens: 70n } });
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("warns with one progress event when tokens usage crosses 80 %, and not again", async () => {
    const exec = await start({ tokens: 1000n });
    for (let i = 1; i <= 10; i += 1) expect((await authorize(exec, modelCall(100n))).allowed).toBe(true);
    const { events, operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.usage?.tokens).toBe(1000n);
    const warnings = events.flatMap((e) => (e.attributes.case === "progress" ? e.attributes.value.budgetWarnings : []));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ dimension: BudgetDimension.TOKENS, used: 800n, limit: 1000n });
    expect(events.find((e) => e.attributes.case === "progress")?.type).toBe(EventType.PROGRESS);
  });

  it("ends the task failed naming TOKENS when a call's estimate would overspend them, charging nothing for it", async () => {
    const exec = await start({ tokens: 1000n });
    expect((await authorize(exec, modelCall(600n))).allowed).toBe(true);
    const over = await authorize(exec, modelCall(401n));
    expect(over).toMatchObject({ allowed: false, exhaustedDimension: BudgetDimension.TOKENS, remaining: { tokens: 400n } });
    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.TOKENS },
      usage: { tokens: 600n, modelCalls: 1n },
    });
  });
});

describe("ReportUsage", () => {
  it("reconciles a model call's estimate with the tokens it used, once per ticket", async () => {
    const exec = await start({ tokens: 1000n });
    const first = await authorize(exec, modelCall(300n));
    expect(first.remaining?.tokens).toBe(700n);
    const fewer = await exec.runtime.reportUsage({ operation: exec.operation.name, callTicket: first.callTicket, actualTokens: 120n });
    expect(fewer).toMatchObject({ withinBudget: true, remaining: { tokens: 880n } });
    const again = await refusal(exec.runtime.reportUsage({ operation: exec.operation.name, callTicket: first.callTicket, actualTokens: 1n }));
    expect(again.code).toBe(Code.InvalidArgument);
    expect(violatedField(again)).toBe("call_ticket");

    const second = await authorize(exec, modelCall(100n));
    const more = await exec.runtime.reportUsage({ operation: exec.operation.name, callTicket: second.callTicket, actualTokens: 250n });
    expect(more).toMatchObject({ withinBudget: true, remaining: { tokens: 630n } });
    const { operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.usage).toMatchObject({ tokens: 370n, modelCalls: 2n });
  });

  it("refuses a forged ticket and another operation's ticket with InvalidArgument naming call_ticket, and they use up nothing", async () => {
    const [a, b] = await Promise.all([start({ tokens: 1000n }), start({ tokens: 1000n })]);
    const { callTicket } = await authorize(a, modelCall(100n));
    const [payload, mac] = callTicket.split(".") as [string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, string>;
    const forgeries = [
      `${payload}.${mac.slice(0, -1)}${mac.endsWith("A") ? "B" : "A"}`,
      `${Buffer.from(JSON.stringify({ ...claims, tokens: "999" })).toString("base64url")}.${mac}`,
      `${Buffer.from(JSON.stringify({ ...claims, operation: b.operation.name })).toString("base64url")}.${mac}`,
      "not-a-ticket",
    ];
    for (const forged of forgeries) {
      const error = await refusal(a.runtime.reportUsage({ operation: a.operation.name, callTicket: forged, actualTokens: 1n }));
      expect([error.code, violatedField(error)]).toEqual([Code.InvalidArgument, "call_ticket"]);
    }
    // b's own credential, for b, with a's genuine ticket: not a ticket of b's.
    const crossed = await refusal(b.runtime.reportUsage({ operation: b.operation.name, callTicket, actualTokens: 1n }));
    expect([crossed.code, violatedField(crossed)]).toEqual([Code.InvalidArgument, "call_ticket"]);
    // None of this used a's ticket up.
    expect(await a.runtime.reportUsage({ operation: a.operation.name, callTicket, actualTokens: 50n })).toMatchObject({
      withinBudget: true,
      remaining: { tokens: 950n },
    });
    await Promise.all([a, b].map((exec) => cancelAndWait(root.operations, exec.operation.name)));
  });

  it("ends the task failed naming TOKENS when the reported tokens go over the budget, and keeps them as spent", async () => {
    const exec = await start({ tokens: 1000n });
    const { callTicket } = await authorize(exec, modelCall(500n));
    const report = await exec.runtime.reportUsage({ operation: exec.operation.name, callTicket, actualTokens: 1500n });
    expect(report.withinBudget).toBe(false);
    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.TOKENS },
      usage: { tokens: 1500n },
    });
  });

  it("charges the delegations and the profile at most the operation's own budget, however much one report claims, and says by how much it went over", async () => {
    // As `amctl delegation root` signs it: the server's default budget (160 000 tokens), here
    // with room in the other dimensions; an agent below it with 100 000 tokens; an operation of 300.
    const rootBudget = create(BudgetSchema, Object.fromEntries(budgetDimensions.map((d) => [d, d === "tokens" ? 160_000n : 1n << 60n])));
    const operator = clientsFor(
      server.url,
      await mintRoot(await operatorOf(server.dataDir), { subject: "cli-like-root", scope: { ...fullScope, budget: rootBudget } }),
    );
    const capped = await createProfileWith(operator.operations, "dev-capped", ProfileType.PERSONAL, roomyBudget({ tokens: 1000n }));
    const agent = await issueAgent(operator, server.url, "agent-100k", roomyBudget({ tokens: 100_000n }));
    const exec = await startCredentialed(server.url, server.dataDir, agent.clients.operations, capped, { tokens: 300n });
    const { callTicket } = await authorize(exec, modelCall(100n));
    const report = await exec.runtime.reportUsage({ operation: exec.operation.name, callTicket, actualTokens: 100_000_000n });
    expect(report).toMatchObject({ withinBudget: false, remaining: { tokens: 0n } });
    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.TOKENS },
      usage: { tokens: 100_000_000n },
    });
    // The agent and the profile were charged the 300 the operation reserved, nothing more...
    const fromAgent = await refusal(agent.clients.operations.submitOperation(execution(profile, ["true"], {}, { tokens: 99_701n })));
    expect(budgetRefusal(fromAgent)).toEqual({ account: agent.delegation.name, dimension: "tokens", requested: 99_701n, remaining: 99_700n });
    const fromProfile = await refusal(agent.clients.operations.submitOperation(execution(capped, ["true"], {}, { tokens: 701n })));
    expect(budgetRefusal(fromProfile)).toEqual({ account: capped, dimension: "tokens", requested: 701n, remaining: 700n });
    // ...so the operator's root still submits, and still issues a child with tokens=1.
    const { operation: submitted } = await operator.operations.submitOperation(execution(profile, ["true"], {}, { tokens: 1000n }));
    expect((await waitForEnd(operator.operations, submitted!.name)).operation.state).toBe(TaskState.COMPLETED);
    const { delegation: child } = await operator.delegations.issueDelegation({ subject: "one-token", scope: { budget: { tokens: 1n } } });
    expect(child?.scope?.budget?.tokens).toBe(1n);
    // The anomaly, on the operation: what was reported, against what budget, and how far over.
    expect(operation.stopCause?.message).toBe(
      "tokens budget exhausted: 100000000 reported against a budget of 300, 99999700 over; its delegations and profile are charged the 300 only",
    );
  });
});

describe("execution credentials", () => {
  it("only the execution's own credential may authorize its calls: another execution's and the root's are PermissionDenied", async () => {
    const [a, b] = await Promise.all([start(), start()]);
    const asked = { operation: a.operation.name, call: modelCall(1n) };
    for (const runtime of [b.runtime, root.runtime]) {
      const error = await refusal(runtime.authorizeCall(asked));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(errorInfo(error)).toMatchObject({ reason: "NOT_THIS_EXECUTION", metadata: { operation: a.operation.name } });
    }
    const { callTicket } = await a.runtime.authorizeCall(asked);
    expect(callTicket).not.toBe("");
    for (const runtime of [b.runtime, root.runtime]) {
      expect((await refusal(runtime.reportUsage({ operation: a.operation.name, callTicket, actualTokens: 1n }))).code).toBe(Code.PermissionDenied);
    }
    // Nothing was charged for the refused callers.
    expect((await root.operations.getOperation({ name: a.operation.name })).operation?.usage?.modelCalls).toBe(1n);
    await Promise.all([a, b].map((exec) => cancelAndWait(root.operations, exec.operation.name)));
  });

  it("cannot submit operations nor issue delegations (PermissionDenied)", async () => {
    const exec = await start();
    const submit = await refusal(exec.clients.operations.submitOperation(execution(profile, ["true"])));
    expect(submit.code).toBe(Code.PermissionDenied);
    expect(errorInfo(submit)?.metadata.axis).toBe("operation_types");
    const cancel = await refusal(exec.clients.operations.cancelOperation({ name: exec.operation.name }));
    expect(cancel.code).toBe(Code.PermissionDenied);
    const issue = await refusal(exec.clients.delegations.issueDelegation({ subject: "escape", scope: {} }));
    expect([issue.code, errorInfo(issue)?.metadata.axis]).toEqual([Code.PermissionDenied, "may_delegate"]);
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("is worthless once its task has been cancelled: Unauthenticated", async () => {
    const exec = await start();
    expect((await authorize(exec, connectorCall)).allowed).toBe(true);
    const { operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.state).toBe(TaskState.CANCELLED);
    expect((await refusal(authorize(exec, connectorCall))).code).toBe(Code.Unauthenticated);
    expect((await refusal(exec.clients.operations.submitOperation(execution(profile, ["true"])))).code).toBe(Code.Unauthenticated);
    expect((await refusal(exec.clients.delegations.whoAmI({}))).code).toBe(Code.Unauthenticated);
  });

  it("is worthless once its task has completed on its own: Unauthenticated", async () => {
    const script = "const fs = require('fs'); fs.writeFileSync('token.tmp', process.env.AMCTL_TOKEN); fs.renameSync('token.tmp', 'token')";
    const { operation: submitted } = await root.operations.submitOperation(execution(profile, [process.execPath, "-e", script]));
    const { operation } = await waitForEnd(root.operations, submitted!.name);
    expect(operation.state).toBe(TaskState.COMPLETED);
    const tokenFile = join(workspaceOf(server.dataDir, operation.name), "token");
    expect(existsSync(tokenFile)).toBe(true);
    const runtime = clientsFor(server.url, readFileSync(tokenFile, "utf8")).runtime;
    expect((await refusal(runtime.authorizeCall({ operation: operation.name, call: connectorCall }))).code).toBe(Code.Unauthenticated);
  });
});
