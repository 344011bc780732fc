// Readiness of replicas on PostgreSQL. When the database goes away (pg_ctl stop -m fast, as an
// operator's restart does) every replica turns NOT_SERVING, overall and per service; when it is
// back, each reconnects with backoff, reads the events committed meanwhile (also by the other
// replica, whose notifications it may have missed), and turns SERVING again. WatchEvents streams
// that stayed open through the outage go on with the events written after it, without a gap.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { EventWatcher } from "../helpers/event-watcher.js";
import { createProfile, operationsClient, quiescent, requestId, type OperationsClient } from "../helpers/operations.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { startReplicas, watcherReport } from "../helpers/replicas.js";

const { cluster } = clusterForFile();

const PROFILE = "profiles/ready";

async function submitRecords(client: OperationsClient, count: number): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, () =>
      client.submitOperation({ requestId: requestId("ready"), profile: PROFILE, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } }),
    ),
  );
}

it("turns NOT_SERVING while the database is down and SERVING once caught up, and open watchers resume without a gap", async () => {
  const postgres = await cluster();
  const servers = await startReplicas(await postgres.createDatabase("readiness"), 2, { bookmarkIntervalMs: 200 });
  try {
    const clients = servers.map((server) => operationsClient(server.url));
    const health = servers.map((server) => createClient(Health, createGrpcTransport({ baseUrl: server.url })));
    // The server as a whole and one of its services, on every replica.
    const statuses = (): Promise<ServingStatus[]> =>
      Promise.all(health.flatMap((client) => ["", "agentmachine.v1.OperationService"].map(async (service) => (await client.check({ service })).status)));
    const all = (status: ServingStatus): ServingStatus[] => Array.from({ length: 4 }, () => status);

    await createProfile(clients[0]!, "ready");
    const watchers = clients.map((client, i) => new EventWatcher(client, `open@${i}`));
    for (const watcher of watchers) watcher.connect(0n);
    await Promise.all(clients.map((client) => submitRecords(client, 10)));
    await quiescent(clients[0]!);
    const before = (await servers[0]!.store.eventBounds()).latest;
    await Promise.all(watchers.map((watcher) => watcher.caughtUp(before, 10_000)));
    expect(await statuses()).toEqual(all(ServingStatus.SERVING));

    await postgres.stopServer();
    await expect.poll(statuses, { timeout: 10_000 }).toEqual(all(ServingStatus.NOT_SERVING));
    // A submit meanwhile is refused; it does not hang.
    await expect(submitRecords(clients[1]!, 1)).rejects.toThrow();

    await postgres.startServer();
    // As soon as one replica is back, it writes; the other, perhaps still reconnecting, reads
    // those events in its catch-up.
    await expect.poll(async () => (await statuses()).some((status) => status === ServingStatus.SERVING), { timeout: 15_000 }).toBe(true);
    const first = (await statuses())[0] === ServingStatus.SERVING ? 0 : 1;
    await submitRecords(clients[first]!, 10);
    await expect.poll(statuses, { timeout: 15_000 }).toEqual(all(ServingStatus.SERVING));
    await Promise.all(clients.map((client) => submitRecords(client, 10)));
    await quiescent(clients[1]!);

    // The streams opened before the outage are the ones that carry on.
    expect(watchers.map((watcher) => [watcher.active, watcher.segments.length])).toEqual([
      [true, 1],
      [true, 1],
    ]);
    const { violations, latest } = await watcherReport(servers[1]!.store, watchers, watchers[0]);
    expect(violations).toEqual([]);
    expect(latest).toBeGreaterThanOrEqual(before + 60n);
    for (const watcher of watchers) expect(watcher.events.filter((event) => event.sequence > before)).toHaveLength(Number(latest - before));
  } finally {
    await Promise.all(servers.map((server) => server.close()));
  }
});
