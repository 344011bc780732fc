// The PostgreSQL store's publication order: committed events reach the listeners in sequence
// order, whatever order the transactions' acknowledgements arrive in.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { LocalPublisher } from "../../src/store/postgres/local-publisher.js";
import type { StoredEvent } from "../../src/store/store.js";

const stored = (sequence: bigint): StoredEvent => ({ event: create(OperationEventSchema, { sequence }), profile: "profiles/p", operationType: 0, labels: {} });

describe("LocalPublisher", () => {
  it("holds a later commit until every earlier sequence has ended, and answers each writer after its events are out", async () => {
    const delivered: bigint[] = [];
    const publisher = new LocalPublisher((events) => delivered.push(...events.map((e) => e.event.sequence)));
    const five = publisher.register(5n);
    const six = publisher.register(6n);
    let sixAnswered = false;
    const sixDone = publisher.settle(six, [stored(6n)]).then(() => (sixAnswered = true));
    await Promise.resolve();
    expect(delivered).toEqual([]);
    expect(sixAnswered).toBe(false);
    await publisher.settle(five, [stored(5n)]);
    await sixDone;
    expect(delivered).toEqual([5n, 6n]);
  });

  it("drops a rolled-back transaction, whose sequence the next one is handed again", async () => {
    const delivered: bigint[] = [];
    const publisher = new LocalPublisher((events) => delivered.push(...events.map((e) => e.event.sequence)));
    const failed = publisher.register(7n);
    const retaken = publisher.register(7n);
    const retakenDone = publisher.settle(retaken, [stored(7n)]);
    await Promise.resolve();
    expect(delivered).toEqual([]);
    await publisher.settle(failed, null);
    await retakenDone;
    expect(delivered).toEqual([7n]);
  });
});
