// Scale-out: several stateless replicas of the server on one PostgreSQL database (a fresh one per
// test, on a throwaway cluster). Submits go through every replica, and WatchEvents watchers on
// every replica must see one total order — contiguous, none twice, the same event for the same
// sequence everywhere — with every acknowledged submit's events, also under hundreds of
// concurrent writers and when a watcher moves from one replica to another. A replica killed with
// SIGKILL mid-load loses nothing it acknowledged. A request id sent to two replicas at once makes
// one operation; a revocation through one replica is honoured by the others within the credential
// cache bound; one delegation's budget is never over-reserved by submits through both.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../src/model/transitions.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import type { OperationStore, StoredEvent } from "../../src/store/store.js";
import { lifecycleViolations } from "../helpers/event-invariants.js";
import { EventWatcher } from "../helpers/event-watcher.js";
import { createProfile, execution, operationsClient, quiescent, requestId, type OperationsClient, type SubmitInit } from "../helpers/operations.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { startChildReplica, startReplicas, stoppedAfterEach, watcherReport } from "../helpers/replicas.js";
import { budgetRefusal, cancelAndWait, clientsFor, issueAgent, roomyBudget, wideRoot } from "../helpers/runtime.js";
import type { TestServer } from "../helpers/server.js";

const { database } = clusterForFile();

const replicaConfig: Partial<ServerConfig> = {
  // Filtered watchers reach the newest sequence through bookmarks.
  bookmarkIntervalMs: 200,
  maxConcurrentExecutions: 8,
  execution: { ...defaultConfig.execution, killGraceMs: 500 },
  // Longer than a child replica's heartbeat period (the default, 2 s), so a live one is never taken for dead.
  runnerHeartbeatMs: 500,
  runnerTimeoutMs: 5_000,
};

/** What each test started, stopped after it whatever happened. */
const started = stoppedAfterEach();

async function replicas(
  prefix: string,
  count = 2,
  overrides: Partial<ServerConfig> = {},
): Promise<{ url: string; servers: TestServer[]; clients: OperationsClient[] }> {
  const url = await database(prefix);
  const servers = await startReplicas(url, count, { ...replicaConfig, ...overrides });
  started.push(...servers);
  return { url, servers, clients: servers.map((server) => operationsClient(server.url)) };
}

const PROFILE_ID = "replicas";
const PROFILE = `profiles/${PROFILE_ID}`;
const FAST_RETRY = { maxAttempts: 2, initialBackoff: durationFromMs(20), maxBackoff: durationFromMs(100) };

/** Mostly record operations (tool_grant.apply), every fourth an execution of `true`, labelled with the replica it went through. */
function loadRequest(index: number, replica: number): SubmitInit {
  const labels = { replica: String(replica) };
  if (index % 4 === 3) return { ...execution(PROFILE, ["true"], { retryPolicy: FAST_RETRY }), labels };
  return { requestId: requestId("load"), profile: PROFILE, labels, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } };
}

interface Ack {
  name: string;
  replica: number;
}

/**
 * Submits `perReplica` requests through each client, `concurrency` in flight on each, and returns
 * the acknowledged ones. A failed submit ends its replica's share (the replica may have been
 * killed); `failures` counts them.
 */
async function submitThrough(
  clients: readonly OperationsClient[],
  perReplica: number,
  concurrency: number,
  onAck?: (ack: Ack) => void,
): Promise<{ acks: Ack[]; failures: number }> {
  const acks: Ack[] = [];
  let failures = 0;
  await Promise.all(
    clients.map(async (client, replica) => {
      let next = 0;
      let failed = false;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (!failed && next < perReplica) {
            const request = loadRequest(next++, replica);
            try {
              const { operation, created } = await client.submitOperation(request);
              if (!created) throw new Error(`${request.requestId} was answered as a retry`);
              const ack = { name: operation!.name, replica };
              acks.push(ack);
              onAck?.(ack);
            } catch (error) {
              if (!(error instanceof ConnectError)) throw error;
              failures += 1;
              failed = true;
            }
          }
        }),
      );
    }),
  );
  return { acks, failures };
}

async function storedOperations(store: OperationStore): Promise<Map<string, Operation>> {
  return new Map((await store.listOperations({ limit: 100_000 })).map((operation) => [operation.name, operation]));
}

/** The acknowledged operations some of whose stored events `watcher` did not receive, or that are not stored at all. */
function unseen(acks: readonly Ack[], watcher: EventWatcher, truth: ReadonlyMap<bigint, StoredEvent>, operations: Map<string, Operation>): string[] {
  const received = new Set(watcher.events.map((event) => event.sequence));
  const missing = new Set<string>();
  for (const ack of acks) if (!operations.has(ack.name)) missing.add(`${ack.name} (not stored)`);
  const acked = new Set(acks.map((ack) => ack.name));
  for (const { event } of truth.values()) if (acked.has(event.operation) && !received.has(event.sequence)) missing.add(event.operation);
  return [...missing];
}

describe("events across replicas", () => {
  it("gives watchers on every replica one total order: contiguous, none twice, every acknowledged submit's events", async () => {
    const { servers, clients } = await replicas("order");
    await createProfile(clients[0]!, PROFILE_ID);
    const watchers = clients.flatMap((client, i) => [
      new EventWatcher(client, `all@${i}`),
      new EventWatcher(client, `records@${i}`, { operationTypes: [OperationType.TOOL_GRANT_APPLY] }),
      new EventWatcher(client, `through-other@${i}`, { labels: { replica: String(1 - i) } }),
    ]);
    for (const watcher of watchers) watcher.connect(0n);
    const { acks, failures } = await submitThrough(clients, 40, 4);
    expect(failures).toBe(0);
    await quiescent(clients[1]!);
    const { violations, truth } = await watcherReport(servers[0]!.store, watchers, watchers[0]);
    expect(violations).toEqual([]);
    const operations = await storedOperations(servers[1]!.store);
    expect(
      lifecycleViolations(
        [...truth.values()].map((stored) => stored.event),
        operations,
      ),
    ).toEqual([]);
    for (const watcher of watchers.filter((w) => w.filter === undefined)) expect(unseen(acks, watcher, truth, operations)).toEqual([]);
    // Every operation ran to its end on the replica that admitted it.
    expect(acks.filter((ack) => operations.get(ack.name)?.state !== TaskState.COMPLETED)).toEqual([]);
  });

  it("keeps every reader's order contiguous under hundreds of concurrent writers on both replicas, also for a reader that moves between them", async () => {
    const { servers, clients } = await replicas("writers");
    await createProfile(clients[1]!, PROFILE_ID);
    const watchers = clients.map((client, i) => new EventWatcher(client, `all@${i}`));
    const mover = new EventWatcher(clients[0]!, "mover");
    for (const watcher of [...watchers, mover]) watcher.connect(0n);
    let moved: Promise<void> | undefined;
    const { acks, failures } = await submitThrough(clients, 200, 32, () => {
      // Halfway, the mover resumes on the other replica from the cursor it reached on the first.
      if (moved !== undefined || mover.events.length < 150) return;
      moved = (async () => {
        await mover.disconnect();
        mover.useClient(clients[1]!);
        mover.resume();
      })();
    });
    expect(failures).toBe(0);
    await moved;
    expect(mover.segments.length).toBe(2);
    await quiescent(clients[0]!);
    const { violations, truth } = await watcherReport(servers[1]!.store, [...watchers, mover], watchers[1]);
    expect(violations).toEqual([]);
    const operations = await storedOperations(servers[0]!.store);
    expect(acks).toHaveLength(400);
    for (const watcher of [...watchers, mover]) expect(unseen(acks, watcher, truth, operations)).toEqual([]);
  });

  it("loses nothing acknowledged when a replica is killed with SIGKILL mid-load; a replica started again recovers what it left", async () => {
    const url = await database("kill");
    const [survivor] = await startReplicas(url, 1, replicaConfig);
    started.push(survivor!);
    const victim = await startChildReplica(url, survivor!);
    started.push(victim);
    const clients = [operationsClient(survivor!.url), operationsClient(victim.url)];
    await createProfile(clients[0]!, PROFILE_ID);
    const watcher = new EventWatcher(clients[0]!, "survivor");
    watcher.connect(0n);
    const killAfter = 40 + Math.floor(Math.random() * 80);
    let victimAcks = 0;
    const { acks, failures } = await submitThrough(clients, 200, 8, (ack) => {
      if (ack.replica === 1 && ++victimAcks === killAfter) victim.child.kill("SIGKILL");
    });
    expect(await victim.exited).toBe("SIGKILL");
    expect(failures).toBeGreaterThanOrEqual(1);
    expect(acks.filter((ack) => ack.replica === 0)).toHaveLength(200);
    // Everything acknowledged is stored, and the survivor's watcher has every event stored so far.
    const operations = await storedOperations(survivor!.store);
    expect(acks.filter((ack) => !operations.has(ack.name))).toEqual([]);
    const { latest } = await survivor!.store.eventBounds();
    await watcher.caughtUp(latest, 20_000);
    // The survivor's own operations end; the killed replica's unfinished ones are taken over once
    // its heartbeat is older than the runner timeout (by the survivor, or the restarted replica).
    await Promise.all(
      acks
        .filter((ack) => ack.replica === 0)
        .map(async (ack) => {
          for (;;) {
            const { operation } = await clients[0]!.getOperation({ name: ack.name });
            if (isTerminal(operation!.state)) return;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }),
    );
    const restarted = await startChildReplica(url, survivor!, victim.dataDir);
    started.push(restarted);
    await quiescent(clients[0]!);
    const { violations, truth } = await watcherReport(survivor!.store, [watcher]);
    expect(violations).toEqual([]);
    const after = await storedOperations(survivor!.store);
    expect(
      lifecycleViolations(
        [...truth.values()].map((stored) => stored.event),
        after,
      ),
    ).toEqual([]);
    expect(unseen(acks, watcher, truth, after)).toEqual([]);
    expect([...after.values()].filter((operation) => !isTerminal(operation.state))).toEqual([]);
  });
});

describe("one store behind every replica", () => {
  it("makes one operation of a request id sent to two replicas at once", async () => {
    const { servers } = await replicas("idempotent");
    // One caller, one credential, on both replicas: request ids are scoped to the caller's delegation.
    const clients = servers.map((server) => clientsFor(server.url, servers[0]!.token).operations);
    await createProfile(clients[0]!, PROFILE_ID);
    for (let i = 0; i < 20; i += 1) {
      const request = i % 2 === 0 ? loadRequest(0, 0) : execution(PROFILE, ["true"]);
      const answers = await Promise.all(clients.map((client) => client.submitOperation(request)));
      expect(new Set(answers.map((answer) => answer.operation!.name)).size).toBe(1);
      expect(answers.map((answer) => answer.created).sort()).toEqual([false, true]);
    }
    const { operations } = await clients[1]!.listOperations({ pageSize: 100, filter: { profile: PROFILE } });
    expect(operations.filter((operation) => operation.type !== OperationType.PROFILE_CREATE)).toHaveLength(20);
  });

  it("refuses a credential revoked through one replica on the other within the credential cache bound", async () => {
    const credentialCacheMs = 300;
    const { servers } = await replicas("revoke", 2, { credentialCacheMs });
    const a = clientsFor(servers[0]!.url, servers[0]!.token);
    const { delegation, token } = await a.delegations.issueDelegation({
      subject: "agent",
      scope: { operationTypes: [OperationType.TOOL_GRANT_APPLY], profiles: ["*"], tools: ["git"] },
    });
    const onA = clientsFor(servers[0]!.url, token);
    const onB = clientsFor(servers[1]!.url, token);
    // Both replicas know the credential now, and B has it in its cache.
    expect((await onA.delegations.whoAmI({})).delegation?.name).toBe(delegation!.name);
    expect((await onB.delegations.whoAmI({})).delegation?.name).toBe(delegation!.name);
    const revoked = Date.now();
    await a.delegations.revokeDelegation({ name: delegation!.name, reason: "test" });
    // The replica that revoked refuses at once.
    expect((await ConnectError.from(await onA.delegations.whoAmI({}).catch((e: unknown) => e))).code).toBe(Code.Unauthenticated);
    let refusedAfter: number | undefined;
    while (refusedAfter === undefined && Date.now() - revoked < 5_000) {
      const answer = await onB.delegations.whoAmI({}).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e).code,
      );
      if (answer === Code.Unauthenticated) refusedAfter = Date.now() - revoked;
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(refusedAfter).toBeDefined();
    // The bound, plus a call's time for slack on a busy machine.
    expect(refusedAfter!).toBeLessThanOrEqual(credentialCacheMs + 250);
  });

  it("never over-reserves one delegation's budget with concurrent submits through both replicas: exactly as many admitted as fit", async () => {
    const { servers } = await replicas("budget");
    const root = await wideRoot(servers[0]!.url, servers[0]!.dataDir);
    const profile = await createProfile(root.operations, PROFILE_ID, ProfileType.PERSONAL);
    const fits = 7;
    const each = 1000n;
    const agent = await issueAgent(root, servers[0]!.url, "shared-budget", roomyBudget({ tokens: each * BigInt(fits) + each / 2n }));
    const through = servers.map((server) => clientsFor(server.url, agent.token).operations);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        through[i % 2]!.submitOperation(execution(profile, ["sleep", "120"], {}, { tokens: each })).then(
          ({ operation }) => ({ name: operation!.name, replica: i % 2 }),
          (e: unknown) => ConnectError.from(e),
        ),
      ),
    );
    const admitted = results.filter((result): result is { name: string; replica: number } => !(result instanceof ConnectError));
    const refused = results.filter((result): result is ConnectError => result instanceof ConnectError);
    try {
      expect(admitted).toHaveLength(fits);
      expect(refused.map((error) => [error.code, budgetRefusal(error)?.dimension])).toEqual(
        Array.from({ length: 40 - fits }, () => [Code.ResourceExhausted, "tokens"]),
      );
    } finally {
      // Each replica stops the executions it runs.
      await Promise.all(admitted.map((result) => cancelAndWait(through[result.replica]!, result.name)));
    }
  });
});
