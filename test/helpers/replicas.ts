// Replicas of the server on one PostgreSQL database, as the scale-out tests run them: in-process
// servers (startTestServer) and `amctl serve --store` child processes. Each has a data dir of its
// own with a copy of the same operator key, so every replica trusts the same roots and a root
// credential minted for one is valid on all. And the check of what their WatchEvents watchers
// received against the store.
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach } from "vitest";
import type { ServerConfig } from "../../src/config/config.js";
import type { OperationStore, StoredEvent } from "../../src/store/store.js";
import { copyOperatorKey } from "./auth.js";
import { contiguityViolations, storeTruth, watcherViolations, type SeenBy } from "./event-invariants.js";
import type { EventWatcher } from "./event-watcher.js";
import { startChildServer, startTestServer, tempDir, type ChildServer, type TestServer } from "./server.js";

/** A list to put servers in: after each test, those in it are stopped (closed, or SIGKILLed), whatever happened. */
export function stoppedAfterEach(): (TestServer | ChildServer)[] {
  const started: (TestServer | ChildServer)[] = [];
  afterEach(async () => {
    await Promise.all(
      started.splice(0).map((server) => {
        if ("close" in server) return server.close();
        server.child.kill("SIGKILL");
        return server.exited;
      }),
    );
  });
  return started;
}

/** A fresh data dir with a copy of the operator key of `from`. */
export function dataDirSharingOperator(from: string): string {
  const dataDir = tempDir();
  copyOperatorKey(from, dataDir);
  return dataDir;
}

/**
 * Starts `count` in-process replicas on the database `store`, one after the other: each applies
 * the policy bundles and recovers active operations as it starts, which must not race.
 */
export async function startReplicas(store: string, count: number, overrides: Partial<ServerConfig> = {}): Promise<TestServer[]> {
  const replicas: TestServer[] = [];
  for (let i = 0; i < count; i += 1) {
    const first = replicas[0];
    replicas.push(await startTestServer({ ...overrides, store, ...(first ? { dataDir: dataDirSharingOperator(first.dataDir) } : {}) }));
  }
  return replicas;
}

/** `amctl serve --store` as a child process, trusting the operator key of `like`'s data dir (or serving `dataDir`, e.g. again after a kill). */
export function startChildReplica(store: string, like: { dataDir: string }, dataDir = dataDirSharingOperator(like.dataDir)): Promise<ChildServer> {
  return startChildServer(["--store", store], { dataDir });
}

/**
 * Waits until every watcher has considered the newest event, lingers (a late duplicate would
 * show now), disconnects them, and returns every invariant they broke against the store's
 * record: each one's events exactly the store's (its filter's share) after its first cursor, in
 * order, contiguous, none twice, and the same event for the same sequence on every watcher; with
 * `reference`, each list exactly its share of the reference's. The store must be quiescent.
 */
export async function watcherReport(
  store: OperationStore,
  watchers: readonly EventWatcher[],
  reference?: EventWatcher,
): Promise<{ violations: string[]; latest: bigint; truth: Map<bigint, StoredEvent> }> {
  const { latest } = await store.eventBounds();
  await Promise.all(watchers.map((watcher) => watcher.caughtUp(latest, 20_000)));
  await sleep(300);
  await Promise.all(watchers.map((watcher) => watcher.disconnect()));
  const truth = await storeTruth(store);
  if ((await store.eventBounds()).latest !== latest) throw new Error("events were appended while checking: not quiescent");
  const seenBy: SeenBy = new Map();
  const violations = [
    ...contiguityViolations([...truth.keys()], 1n),
    ...watchers.flatMap((watcher) => watcherViolations(watcher, truth, latest, seenBy, reference)),
  ];
  return { violations, latest, truth };
}
