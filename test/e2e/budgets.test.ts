// Budgets end to end: an execution reserves the consumable part of its requested budget from
// its delegation and its profile in the commit that admits it, or is refused with
// ResourceExhausted naming the dimension; a dimension it leaves at 0 gets the server's default
// cut to what its delegation has left, so a child with a dimension at 0 still runs what does
// not use it; the reservation is given back when it ends; memory and disk are per-execution
// caps; concurrent submits and child issues never overspend; and agentConcurrency caps how many
// run at once, the others waiting queued in order.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension, BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import type { OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { CallKind } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { EventType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../src/model/transitions.js";
import { execution, run, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import {
  bindProvider,
  budgetRefusal,
  cancelAndWait,
  createProfileWith,
  issueAgent,
  refusal,
  roomyBudget,
  startCredentialed,
  wideRoot,
  type BudgetInit,
  type Clients,
} from "../helpers/runtime.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
let root: Clients;
let profile: string;

/** Runs until cancelled (well past any test). */
const SLEEPER = ["sleep", "120"];

function sleeper(budget: BudgetInit, labels: Record<string, string> = {}, where = profile) {
  return { ...execution(where, SLEEPER, {}, budget), labels };
}

/** Submits; the operation's name, or the refusal. */
async function attempt(client: OperationsClient, request: ReturnType<typeof sleeper>): Promise<string | ConnectError> {
  return client.submitOperation(request).then(
    ({ operation }) => operation!.name,
    (e: unknown) => ConnectError.from(e),
  );
}

async function cancelAll(names: readonly string[]): Promise<void> {
  await Promise.all(names.map((name) => cancelAndWait(root.operations, name)));
}

beforeAll(async () => {
  server = await startTestServer({ maxConcurrentExecutions: 8 });
  root = await wideRoot(server.url, server.dataDir);
  profile = await createProfileWith(root.operations, "work", ProfileType.PERSONAL);
  await bindProvider(root.operations, await createProfileWith(root.operations, "models", ProfileType.LOCAL_MODEL_PROVIDER), "ollama");
});
afterAll(() => server.close());

describe("admission", () => {
  it("refuses an execution that asks for more than its delegation has left with ResourceExhausted naming the dimension, and stores nothing", async () => {
    const agent = await issueAgent(root, server.url, "tight", roomyBudget({ tokens: 1000n }));
    const request = sleeper({ tokens: 1001n }, { case: "over-budget" });
    const error = await refusal(agent.clients.operations.submitOperation(request));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(error)).toEqual({ account: agent.delegation.name, dimension: "tokens", requested: 1001n, remaining: 1000n });
    expect((await root.operations.listOperations({ filter: { labels: { case: "over-budget" } } })).operations).toEqual([]);

    // The request id was not recorded, and nothing was reserved: the same id with a budget
    // that fits is a new operation that may take all 1000 tokens.
    const fits = await agent.clients.operations.submitOperation({ ...request, requestedBudget: create(BudgetSchema, { tokens: 1000n }) });
    expect(fits.created).toBe(true);
    const nothingLeft = await refusal(agent.clients.operations.submitOperation(sleeper({ tokens: 1n })));
    expect(budgetRefusal(nothingLeft)).toMatchObject({ dimension: "tokens", remaining: 0n });
    await cancelAll([fits.operation!.name]);
  });

  it("fills a dimension the request leaves at 0 with the server's default, or with what the delegation has left when that is less", async () => {
    const agent = await issueAgent(root, server.url, "below-default", roomyBudget({ tokens: 100_000n }));
    const { operation: first } = await agent.clients.operations.submitOperation(sleeper({ tokens: 30_000n }));
    const { operation: second } = await agent.clients.operations.submitOperation(sleeper({}));
    expect([second!.requestedBudget?.tokens, second!.requestedBudget?.modelCalls]).toEqual([70_000n, 200n]); // what is left; the default
    await cancelAll([first!.name, second!.name]);
  });

  it("runs an execution under a child with a dimension at 0 when it does not use it, and refuses a call that needs it", async () => {
    const child = await issueAgent(root, server.url, "no-models", roomyBudget({ modelCalls: 0n, tokens: 0n }));
    const { operation: done } = await run(child.clients.operations, execution(profile, ["true"]));
    expect(done).toMatchObject({ state: TaskState.COMPLETED, requestedBudget: { modelCalls: 0n, tokens: 0n, connectorCalls: 120n } });

    const exec = await startCredentialed(server.url, server.dataDir, child.clients.operations, profile);
    const connector = await exec.runtime.authorizeCall({ operation: exec.operation.name, call: { kind: CallKind.CONNECTOR, connector: "issue-tracker" } });
    expect(connector.allowed).toBe(true);
    const model = await exec.runtime.authorizeCall({
      operation: exec.operation.name,
      call: { kind: CallKind.MODEL, modelProvider: "ollama", estimatedTokens: 1n },
    });
    expect(model).toMatchObject({ allowed: false, exhaustedDimension: BudgetDimension.MODEL_CALLS });
    const { operation: ended } = await waitForEnd(root.operations, exec.operation.name);
    expect(ended).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.MODEL_CALLS } });
  });

  it("still refuses an execution when its delegation has nothing left of a dimension every execution runs in", async () => {
    const child = await issueAgent(root, server.url, "no-wall-clock", roomyBudget({ wallClockSeconds: 0n }));
    const error = await refusal(child.clients.operations.submitOperation(sleeper({})));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(error)).toEqual({ account: child.delegation.name, dimension: "wallClockSeconds", requested: 1n, remaining: 0n });
  });

  it("holds memory and disk as caps per execution: each must fit, and executions that fit never take them from each other", async () => {
    const agent = await issueAgent(root, server.url, "caps", roomyBudget({ sandboxMemoryBytes: 1024n, localDiskBytes: 4096n }));
    const caps = { sandboxMemoryBytes: 1024n, localDiskBytes: 4096n };
    const memory = await refusal(agent.clients.operations.submitOperation(sleeper({ ...caps, sandboxMemoryBytes: 1025n })));
    expect(memory.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(memory)).toMatchObject({ dimension: "sandboxMemoryBytes", requested: 1025n, remaining: 1024n });
    const disk = await refusal(agent.clients.operations.submitOperation(sleeper({ ...caps, localDiskBytes: 4097n })));
    expect(budgetRefusal(disk)).toMatchObject({ dimension: "localDiskBytes", requested: 4097n, remaining: 4096n });
    const admitted = [];
    for (let i = 0; i < 3; i += 1) admitted.push((await agent.clients.operations.submitOperation(sleeper(caps))).operation!.name);
    expect(admitted).toHaveLength(3);
    await cancelAll(admitted);
  });
});

describe("reservation", () => {
  it("gives an ended execution's reservation back: wall-clock for two sleepers admits two, refuses a third, and admits one again after one is cancelled", async () => {
    // 250 s: two executions of 100 fit, a third does not; what the cancelled one ran (a few
    // seconds) stays spent and the 100 it reserved comes back, so a new one fits again.
    const agent = await issueAgent(root, server.url, "two-sleepers", roomyBudget({ wallClockSeconds: 250n }));
    const ops = agent.clients.operations;
    const first = (await ops.submitOperation(sleeper({ wallClockSeconds: 100n }))).operation!;
    const second = (await ops.submitOperation(sleeper({ wallClockSeconds: 100n }))).operation!;
    const third = await refusal(ops.submitOperation(sleeper({ wallClockSeconds: 100n })));
    expect(third.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(third)).toEqual({ account: agent.delegation.name, dimension: "wallClockSeconds", requested: 100n, remaining: 50n });

    const { operation: cancelled } = await cancelAndWait(ops, first.name);
    expect(cancelled.state).toBe(TaskState.CANCELLED);
    const again = await ops.submitOperation(sleeper({ wallClockSeconds: 100n }));
    expect(again.created).toBe(true);
    await cancelAll([second.name, again.operation!.name]);
  });

  it("limits everything done in a profile with a budget, whichever delegation submits it", async () => {
    const capped = await createProfileWith(root.operations, "capped", ProfileType.PERSONAL, roomyBudget({ wallClockSeconds: 250n }));
    const agent = await issueAgent(root, server.url, "in-capped", roomyBudget());
    const first = (await root.operations.submitOperation(sleeper({ wallClockSeconds: 100n }, {}, capped))).operation!;
    const second = (await agent.clients.operations.submitOperation(sleeper({ wallClockSeconds: 100n }, {}, capped))).operation!;
    for (const client of [root.operations, agent.clients.operations]) {
      const error = await refusal(client.submitOperation(sleeper({ wallClockSeconds: 100n }, {}, capped)));
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(budgetRefusal(error)).toEqual({ account: capped, dimension: "wallClockSeconds", requested: 100n, remaining: 50n });
    }
    // Another profile is not limited by this one's budget.
    const elsewhere = (await agent.clients.operations.submitOperation(sleeper({ wallClockSeconds: 100n }))).operation!;

    await cancelAndWait(root.operations, first.name);
    const again = await agent.clients.operations.submitOperation(sleeper({ wallClockSeconds: 100n }, {}, capped));
    expect(again.created).toBe(true);
    await cancelAll([second.name, elsewhere.name, again.operation!.name]);
  });

  it("keeps what an ended execution really ran: its wall-clock seconds stay spent from the delegation", async () => {
    const agent = await issueAgent(root, server.url, "spender", roomyBudget({ wallClockSeconds: 100n }));
    const ops = agent.clients.operations;
    const { operation } = await run(ops, execution(profile, [process.execPath, "-e", "setTimeout(() => {}, 1500)"], {}, { wallClockSeconds: 100n }));
    expect(operation.state).toBe(TaskState.COMPLETED);
    const measured = operation.artifact?.kind.case === "localAgentExecution" ? operation.artifact.kind.value.usage?.wallClockSeconds : undefined;
    expect(measured).toBeGreaterThanOrEqual(2n); // ran 1.5 s; measured in whole seconds, rounded up
    // 100 − what it ran is left: a sleeper that asks for 100 again does not fit.
    const again = await attempt(ops, sleeper({ wallClockSeconds: 100n }));
    if (typeof again === "string") await cancelAll([again]);
    expect(typeof again === "string" ? `admitted as ${again}` : again.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(again as ConnectError)).toMatchObject({ dimension: "wallClockSeconds", remaining: 100n - measured! });
    // The operation's usage is what the ledger keeps when the reservation is settled.
    expect(operation.usage?.wallClockSeconds).toBe(measured);
  });
});

describe("no overspending under concurrency", () => {
  it("admits exactly as many of 40 concurrent submits as the budget fits, and refuses the rest with ResourceExhausted", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }),
        fc.bigInt({ min: 1n, max: 10_000n }),
        fc.double({ min: 0, max: 0.999, noNaN: true }),
        async (fits, each, slackShare) => {
          // A budget for `fits` of them and a bit, never enough for one more.
          const slack = BigInt(Math.floor(Number(each - 1n) * slackShare));
          const agent = await issueAgent(root, server.url, `hammer-${fits}`, roomyBudget({ tokens: each * BigInt(fits) + slack }));
          const results = await Promise.all(Array.from({ length: 40 }, () => attempt(agent.clients.operations, sleeper({ tokens: each }))));
          const admitted = results.filter((r): r is string => typeof r === "string");
          const refused = results.filter((r): r is ConnectError => r instanceof ConnectError);
          try {
            expect(admitted).toHaveLength(fits);
            expect(refused.map((e) => [e.code, budgetRefusal(e)?.dimension])).toEqual(
              Array.from({ length: 40 - fits }, () => [Code.ResourceExhausted, "tokens"]),
            );
            // What is left is exactly the slack.
            expect(refused.map((e) => budgetRefusal(e)?.remaining).filter((r) => r !== slack)).toEqual([]);
          } finally {
            await cancelAll(admitted);
          }
        },
      ),
      { numRuns: 5 },
    );
  });

  it("never lets child delegations issued concurrently with submits take more than the parent's budget", async () => {
    const parent = await issueAgent(root, server.url, "carved", roomyBudget({ tokens: 10_000n }), true);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        i % 2 === 0
          ? attempt(parent.clients.operations, sleeper({ tokens: 1000n })).then((r) => ({ kind: "submit" as const, result: r }))
          : parent.clients.delegations.issueDelegation({ subject: `child-${i}`, scope: { budget: { tokens: 1000n } } }).then(
              ({ delegation }) => ({ kind: "issue" as const, result: delegation!.name }),
              (e: unknown) => ({ kind: "issue" as const, result: ConnectError.from(e) }),
            ),
      ),
    );
    const admitted = results.filter((r) => r.kind === "submit" && typeof r.result === "string").map((r) => r.result as string);
    const issued = results.filter((r) => r.kind === "issue" && typeof r.result === "string");
    try {
      expect(admitted.length + issued.length).toBe(10);
      for (const { kind, result } of results) {
        if (typeof result === "string") continue;
        if (kind === "submit") expect(budgetRefusal(result)).toMatchObject({ dimension: "tokens" });
        else expect([result.code, result.findDetails(ErrorInfoSchema)[0]?.metadata.axis]).toEqual([Code.PermissionDenied, "budget.tokens"]);
      }
      // The children and the operations hold the parent's 10 000 tokens between them: nothing is left.
      const { delegations } = await parent.clients.delegations.listDelegations({});
      const carved = delegations
        .filter((d) => d.parent === parent.delegation.name && d.operation === "")
        .reduce((sum, d) => sum + (d.scope?.budget?.tokens ?? 0n), 0n);
      expect(carved + 1000n * BigInt(admitted.length)).toBe(10_000n);
      expect(budgetRefusal(await refusal(parent.clients.operations.submitOperation(sleeper({ tokens: 1n }))))).toMatchObject({ remaining: 0n });
      expect((await refusal(parent.clients.delegations.issueDelegation({ subject: "one-more", scope: { budget: { tokens: 1n } } }))).code).toBe(
        Code.PermissionDenied,
      );
    } finally {
      await cancelAll(admitted);
    }
  });

  it("gives a revoked child's unspent budget back to its parent, but not what the child's executions spent", async () => {
    const parent = await issueAgent(root, server.url, "spend-then-revoke", roomyBudget({ tokens: 1000n }), true);
    const child = await issueAgent(parent.clients, server.url, "spender-child", roomyBudget({ tokens: 1000n, agentConcurrency: 10n }));
    const exec = await startCredentialed(server.url, server.dataDir, child.clients.operations, profile, { tokens: 1000n });
    const call = await exec.runtime.authorizeCall({
      operation: exec.operation.name,
      call: { kind: CallKind.MODEL, modelProvider: "ollama", estimatedTokens: 900n },
    });
    expect(call.allowed).toBe(true);
    await parent.clients.delegations.revokeDelegation({ name: child.delegation.name });
    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({ state: TaskState.CANCELLED, usage: { tokens: 900n } });

    // 900 of the parent's 1000 tokens were really spent below it: 100 are left.
    const again = await attempt(parent.clients.operations, sleeper({ tokens: 1000n }));
    if (typeof again === "string") await cancelAll([again]);
    expect(typeof again === "string" ? `admitted as ${again}` : again.code).toBe(Code.ResourceExhausted);
    expect(budgetRefusal(again as ConnectError)).toMatchObject({ account: parent.delegation.name, dimension: "tokens", remaining: 100n });
  });
});

/** Every event of `names`, in commit order. */
async function eventsOf(client: OperationsClient, names: readonly string[]): Promise<OperationEvent[]> {
  const all = (await Promise.all(names.map(async (name) => (await waitForEnd(client, name)).events))).flat();
  return all.sort((a, b) => (a.sequence < b.sequence ? -1 : 1));
}

/** The most tasks of `events` that were running at once, replaying the events in commit order. */
function mostRunningAtOnce(events: readonly OperationEvent[]): number {
  const running = new Set<string>();
  let most = 0;
  for (const event of events) {
    if (event.state === TaskState.RUNNING) running.add(event.operation);
    else running.delete(event.operation);
    most = Math.max(most, running.size);
  }
  return most;
}

/** Samples the operations labelled `labels` through ListOperations until stopped; records the most running at once. */
function sampleRunning(client: OperationsClient, labels: Record<string, string>) {
  let most = 0;
  let stopped = false;
  let failure: unknown;
  const loop = (async () => {
    while (!stopped) {
      const { operations } = await client.listOperations({ pageSize: 100, filter: { labels } });
      most = Math.max(most, operations.filter((o) => o.state === TaskState.RUNNING).length);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })().catch((error: unknown) => {
    failure = error;
  });
  return {
    /** Stops sampling (again is a no-op); the most running at once it saw. */
    async stop(): Promise<number> {
      stopped = true;
      await loop;
      if (failure !== undefined) throw failure;
      return most;
    },
  };
}

async function statesOf(client: OperationsClient, names: readonly string[]): Promise<TaskState[]> {
  return Promise.all(names.map(async (name) => (await client.getOperation({ name })).operation!.state));
}

/** The sequence of the first event of type `type` of `name` in `events`. */
function sequenceOf(events: readonly OperationEvent[], name: string, predicate: (e: OperationEvent) => boolean): bigint {
  const found = events.find((e) => e.operation === name && predicate(e));
  if (found === undefined) throw new Error(`no such event of ${name}`);
  return found.sequence;
}

describe("agentConcurrency", () => {
  it("runs at most agentConcurrency executions of a delegation at once; the others wait queued and start in submission order as slots free, none refused", async () => {
    const agent = await issueAgent(root, server.url, "two-at-a-time", roomyBudget({ agentConcurrency: 2n }));
    const ops = agent.clients.operations;
    const labels = { batch: "delegation-concurrency" };
    const sampler = sampleRunning(root.operations, labels);
    const names: string[] = [];
    try {
      for (let i = 0; i < 4; i += 1) {
        const { operation, created } = await ops.submitOperation(sleeper({}, labels));
        expect(created).toBe(true);
        names.push(operation!.name);
      }
      const [a, b, c, d] = names as [string, string, string, string];
      const running = TaskState.RUNNING;
      const queued = TaskState.QUEUED;

      await expect.poll(() => statesOf(ops, [a, b]), { timeout: 15_000 }).toEqual([running, running]);
      expect(await statesOf(ops, [c, d])).toEqual([queued, queued]);
      await cancelAndWait(ops, a);
      await expect.poll(() => statesOf(ops, [c]), { timeout: 15_000 }).toEqual([running]);
      expect(await statesOf(ops, [b, d])).toEqual([running, queued]);
      await cancelAndWait(ops, b);
      await expect.poll(() => statesOf(ops, [d]), { timeout: 15_000 }).toEqual([running]);
    } finally {
      await cancelAll(names);
      await sampler.stop();
    }

    expect(await sampler.stop()).toBeLessThanOrEqual(2);
    const events = await eventsOf(ops, names);
    expect(mostRunningAtOnce(events)).toBe(2);
    // Each waiting one started only after a running one ended, first come first served.
    const [a, b, c, d] = names as [string, string, string, string];
    const started = (name: string) => sequenceOf(events, name, (e) => e.type === EventType.START);
    const ended = (name: string) => sequenceOf(events, name, (e) => isTerminal(e.state));
    expect(started(c)).toBeGreaterThan(ended(a));
    expect(started(d)).toBeGreaterThan(ended(b));
    expect(started(c)).toBeLessThan(started(d));
    expect(events.filter((e) => e.type === EventType.START).map((e) => e.operation)).toEqual(names);
  });

  it("runs at most the agentConcurrency of a profile's budget at once, whichever delegations submit, the others waiting in order", async () => {
    const single = await createProfileWith(root.operations, "one-at-a-time", ProfileType.PERSONAL, roomyBudget({ agentConcurrency: 1n }));
    const agent = await issueAgent(root, server.url, "in-single", roomyBudget());
    const labels = { batch: "profile-concurrency" };
    const sampler = sampleRunning(root.operations, labels);
    const names: string[] = [];
    try {
      for (const client of [root.operations, agent.clients.operations, root.operations]) {
        names.push((await client.submitOperation(sleeper({}, labels, single))).operation!.name);
      }
      const [a, b, c] = names as [string, string, string];
      await expect.poll(() => statesOf(root.operations, [a]), { timeout: 15_000 }).toEqual([TaskState.RUNNING]);
      expect(await statesOf(root.operations, [b, c])).toEqual([TaskState.QUEUED, TaskState.QUEUED]);
      await cancelAndWait(root.operations, a);
      await expect.poll(() => statesOf(root.operations, [b]), { timeout: 15_000 }).toEqual([TaskState.RUNNING]);
      expect(await statesOf(root.operations, [c])).toEqual([TaskState.QUEUED]);
      await cancelAndWait(root.operations, b);
      await expect.poll(() => statesOf(root.operations, [c]), { timeout: 15_000 }).toEqual([TaskState.RUNNING]);
    } finally {
      await cancelAll(names);
      await sampler.stop();
    }

    expect(await sampler.stop()).toBeLessThanOrEqual(1);
    const events = await eventsOf(root.operations, names);
    expect(mostRunningAtOnce(events)).toBe(1);
    expect(events.filter((e) => e.type === EventType.START).map((e) => e.operation)).toEqual(names);
  });
});
