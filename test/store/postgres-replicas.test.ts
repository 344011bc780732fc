// Several PostgresStore instances on one database, as replicas of the server would hold them:
// each instance's onCommit delivers every event committed by any of them, in sequence order,
// each once, and a writer is answered after its own events reached its listeners. An instance
// whose event connection is cut reports itself unavailable, reconnects, delivers what the others
// committed meanwhile, and reports itself available again.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { PostgresStore } from "../../src/store/postgres/postgres-store.js";
import type { StoredEvent } from "../../src/store/store.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { event, operation, SCOPE } from "./conformance.js";

const { database } = clusterForFile();

/** Everything an instance's onCommit delivered, by sequence. */
function recorder(store: PostgresStore): bigint[] {
  const delivered: bigint[] = [];
  store.onCommit((events: StoredEvent[]) => delivered.push(...events.map((e) => e.event.sequence)));
  return delivered;
}

/** Creates an operation with its first event; resolves with that event's sequence. */
async function append(store: PostgresStore): Promise<bigint> {
  const op = operation();
  const result = await store.createOperation({
    idempotencyScope: SCOPE,
    operation: op,
    requestDigest: "d",
    event: event(op.name, EventType.START, TaskState.QUEUED),
  });
  if (result.kind !== "created") throw new Error(`not created: ${result.kind}`);
  return result.event!.event.sequence;
}

const oneTo = (n: number): bigint[] => Array.from({ length: n }, (_, i) => BigInt(i + 1));

async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !check(); await new Promise((resolve) => setTimeout(resolve, 10))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

describe("PostgreSQL store replicas", () => {
  it("delivers every replica's events to every replica in one order, and each writer's own before it is answered", async () => {
    const url = await database("replicas");
    const stores = await Promise.all([PostgresStore.open(url), PostgresStore.open(url), PostgresStore.open(url)]);
    try {
      const delivered = stores.map(recorder);
      const writes = 300;
      const answeredLate: bigint[] = [];
      await Promise.all(
        Array.from({ length: writes }, async (_, i) => {
          const index = i % stores.length;
          const sequence = await append(stores[index]!);
          if (!delivered[index]!.includes(sequence)) answeredLate.push(sequence);
        }),
      );
      expect(answeredLate).toEqual([]);
      await eventually(() => delivered.every((seen) => seen.length >= writes), "every replica to deliver every event");
      for (const seen of delivered) expect(seen).toEqual(oneTo(writes));
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it("reports an instance whose event connection was cut unavailable, then available with everything committed meanwhile", async () => {
    const url = await database("availability");
    const cut = await PostgresStore.open(url);
    // The instance's own event connection: the only one on this database so far.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const { rows } = await admin.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'amctl-events'",
    );
    expect(rows).toHaveLength(1);
    const other = await PostgresStore.open(url);
    try {
      const availability: boolean[] = [];
      cut.onAvailability((available) => availability.push(available));
      const delivered = recorder(cut);
      await append(other);
      await eventually(() => delivered.length === 1, "the first event");
      await admin.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      await eventually(() => availability.length === 1, "unavailability");
      expect(availability).toEqual([false]);
      // Committed by the other instance while the connection is being made again.
      for (let i = 0; i < 20; i += 1) await append(other);
      await eventually(() => availability.length === 2, "availability");
      expect(availability).toEqual([false, true]);
      await eventually(() => delivered.length === 21, "the events committed meanwhile");
      expect(delivered).toEqual(oneTo(21));
      // And it writes and delivers as before.
      expect(await append(cut)).toBe(22n);
      expect(delivered).toEqual(oneTo(22));
    } finally {
      await admin.end();
      await Promise.all([cut.close(), other.close()]);
    }
  });
});
