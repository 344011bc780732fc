// The store conformance suite: every OperationStore implementation must pass it unchanged.
// test/store/*.test.ts run it against each backend.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DelegationSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { OperationSchema, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { EventType, OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { OperationStore, StoredEvent } from "../../src/store/store.js";

let counter = 0;
function operation(overrides: Partial<Operation> = {}): Operation {
  counter += 1;
  const id = `01TEST${String(counter).padStart(20, "0")}`;
  const op = create(OperationSchema, {
    name: `operations/${id}`,
    requestId: `req-${id}`,
    type: OperationType.TOOL_GRANT_APPLY,
    profile: "profiles/p",
    state: TaskState.QUEUED,
    labels: { team: "a" },
  });
  return Object.assign(op, overrides);
}

function event(name: string, type: EventType, state: TaskState, time = new Date()) {
  return create(OperationEventSchema, { operation: name, type, state, time: timestampFromDate(time), attempt: 1 });
}

export function storeConformance(backend: string, open: () => Promise<{ store: OperationStore; reopen: () => Promise<OperationStore> }>): void {
  describe(`OperationStore conformance: ${backend}`, () => {
    let store: OperationStore;
    let reopen: () => Promise<OperationStore>;
    beforeEach(async () => {
      ({ store, reopen } = await open());
    });
    afterEach(async () => {
      await store.close();
    });

    it("creates an operation and reads it back by name and by request id", async () => {
      const op = operation();
      expect(await store.createOperation({ operation: op, requestDigest: "d1" })).toMatchObject({ kind: "created" });
      expect((await store.getOperation(op.name))?.requestId).toBe(op.requestId);
      expect(await store.findByRequestId(op.requestId)).toMatchObject({ requestDigest: "d1", operation: { name: op.name } });
      expect(await store.getOperation("operations/none")).toBeUndefined();
    });

    it("answers a repeated request id with the existing operation, or a conflict when the body differs", async () => {
      const op = operation();
      await store.createOperation({ operation: op, requestDigest: "same" });
      const again = operation({ requestId: op.requestId });
      expect(await store.createOperation({ operation: again, requestDigest: "same" })).toMatchObject({ kind: "existing", operation: { name: op.name } });
      expect(await store.createOperation({ operation: again, requestDigest: "other" })).toMatchObject({ kind: "request-id-conflict", operation: { name: op.name } });
      expect(await store.getOperation(again.name)).toBeUndefined();
    });

    it("registers a profile once, atomically with its create operation", async () => {
      const first = operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/x" });
      const createsProfile = { name: "profiles/x", profileType: ProfileType.PERSONAL };
      const [a, b] = await Promise.all([
        store.createOperation({ operation: first, requestDigest: "1", createsProfile }),
        store.createOperation({ operation: operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/x" }), requestDigest: "2", createsProfile }),
      ]);
      expect([a.kind, b.kind].sort()).toEqual(["created", "profile-exists"]);
      expect(await store.getProfile("profiles/x")).toEqual(createsProfile);
      expect(await store.getProfile("profiles/y")).toBeUndefined();
    });

    it("assigns one contiguous, increasing sequence to events across concurrent writers", async () => {
      const ops = Array.from({ length: 20 }, () => operation());
      await Promise.all(ops.map((op) => store.createOperation({ operation: op, requestDigest: "d" })));
      const results = await Promise.all(
        ops.map((op) =>
          store.updateOperation({ operation: { ...op, state: TaskState.RUNNING }, expectedState: TaskState.QUEUED, event: event(op.name, EventType.START, TaskState.RUNNING) }),
        ),
      );
      const sequences = results.map((r) => (r.kind === "updated" ? r.event!.event.sequence : -1n)).sort((x, y) => (x < y ? -1 : 1));
      expect(sequences).toEqual(sequences.map((_, i) => sequences[0]! + BigInt(i)));
      const read = await store.readEvents(0n, 100);
      expect(read.map((e) => e.event.sequence)).toEqual(sequences);
      expect(await store.eventBounds()).toEqual({ oldest: sequences[0], latest: sequences[sequences.length - 1] });
    });

    it("applies an update only from the expected state, and records the event with it", async () => {
      const op = operation();
      await store.createOperation({ operation: op, requestDigest: "d" });
      const running = { ...op, state: TaskState.RUNNING, attempt: 1 };
      const first = await store.updateOperation({ operation: running, expectedState: TaskState.QUEUED, event: event(op.name, EventType.START, TaskState.RUNNING) });
      expect(first.kind).toBe("updated");
      const stale = await store.updateOperation({ operation: { ...op, state: TaskState.CANCELLED }, expectedState: TaskState.QUEUED, event: event(op.name, EventType.CANCEL, TaskState.CANCELLED) });
      expect(stale).toMatchObject({ kind: "state-changed", operation: { state: TaskState.RUNNING } });
      const stored = await store.getOperation(op.name);
      expect(stored?.state).toBe(TaskState.RUNNING);
      expect(stored?.lastSequence).toBe(first.kind === "updated" ? first.event!.event.sequence : 0n);
      expect((await store.readEvents(0n, 10)).map((e) => e.event.type)).toEqual([EventType.START]);
      expect(await store.updateOperation({ operation: operation(), expectedState: TaskState.QUEUED })).toEqual({ kind: "not-found" });
    });

    it("publishes committed events to onCommit listeners in sequence order, with their filter fields", async () => {
      const published: StoredEvent[] = [];
      store.onCommit((events) => published.push(...events));
      const op = operation({ labels: { team: "b" }, profile: "profiles/q", type: OperationType.EXECUTION_START });
      await store.createOperation({ operation: op, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) });
      expect(published).toHaveLength(1);
      expect(published[0]).toMatchObject({ profile: "profiles/q", operationType: OperationType.EXECUTION_START, labels: { team: "b" } });
      // A write that changes nothing publishes nothing.
      await store.updateOperation({ operation: op, expectedState: TaskState.RUNNING, event: event(op.name, EventType.START, TaskState.RUNNING) });
      expect(published).toHaveLength(1);
    });

    it("publishes nothing of a write that failed, and keeps nothing of it", async () => {
      const published: StoredEvent[] = [];
      store.onCommit((events) => published.push(...events));
      const op = operation();
      await store.createOperation({ operation: op, requestDigest: "d" });
      // Same name, another request id: the insert fails after its event was appended.
      const clash = operation({ name: op.name });
      await expect(store.createOperation({ operation: clash, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) })).rejects.toThrow();
      expect(published).toEqual([]);
      expect(await store.readEvents(0n, 10)).toEqual([]);
      expect(await store.findByRequestId(clash.requestId)).toBeUndefined();
    });

    it("lists newest first with filters, and pages by name", async () => {
      const made: Operation[] = [];
      for (let i = 0; i < 6; i += 1) {
        const op = operation({
          type: i % 2 ? OperationType.EXECUTION_START : OperationType.TOOL_GRANT_APPLY,
          profile: i < 3 ? "profiles/a" : "profiles/b",
          labels: { parity: i % 2 ? "odd" : "even", "dotted.key": "v" },
        });
        made.push(op);
        await store.createOperation({ operation: op, requestDigest: "d" });
      }
      const names = (ops: Operation[]) => ops.map((o) => o.name);
      expect(names(await store.listOperations({ limit: 10 }))).toEqual(names([...made].reverse()));
      expect(names(await store.listOperations({ limit: 10, types: [OperationType.EXECUTION_START] }))).toEqual(names([made[5]!, made[3]!, made[1]!]));
      expect(names(await store.listOperations({ limit: 10, profile: "profiles/a", labels: { parity: "even" } }))).toEqual(names([made[2]!, made[0]!]));
      expect(names(await store.listOperations({ limit: 10, labels: { "dotted.key": "v" } }))).toHaveLength(6);
      expect(names(await store.listOperations({ limit: 2, beforeName: made[4]!.name }))).toEqual(names([made[3]!, made[2]!]));
      expect(names(await store.listOperations({ limit: 10, states: [TaskState.RUNNING] }))).toEqual([]);
    });

    it("lists the active operations for recovery, oldest first", async () => {
      const queued = operation();
      const done = operation({ state: TaskState.COMPLETED });
      await store.createOperation({ operation: queued, requestDigest: "d" });
      await store.createOperation({ operation: done, requestDigest: "d" });
      expect((await store.listActiveOperations()).map((o) => o.name)).toEqual([queued.name]);
    });

    it("compacts events by count and by age, never reusing a sequence", async () => {
      const op = operation();
      await store.createOperation({ operation: op, requestDigest: "d" });
      const old = new Date(Date.now() - 3_600_000);
      for (let i = 0; i < 10; i += 1) {
        await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: event(op.name, EventType.PROGRESS, TaskState.QUEUED, i < 2 ? old : new Date()) });
      }
      const before = await store.eventBounds();
      expect(await store.compactEvents({ maxEvents: 5, maxAgeMs: 60_000 }, new Date())).toBe(5);
      const after = await store.eventBounds();
      expect(after).toEqual({ oldest: before.latest - 4n, latest: before.latest });
      expect(await store.compactEvents({ maxEvents: 0, maxAgeMs: 60_000 }, new Date())).toBe(5);
      expect(await store.eventBounds()).toEqual({ oldest: before.latest + 1n, latest: before.latest });
      const next = await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: event(op.name, EventType.PROGRESS, TaskState.QUEUED) });
      expect(next.kind === "updated" && next.event!.event.sequence).toBe(before.latest + 1n);
    });

    it("records a delegation once, and revokes a subtree in one commit, each delegation once", async () => {
      const d = (name: string, parent = "") => create(DelegationSchema, { name, parent, subject: name, expireTime: timestampFromDate(new Date(Date.now() + 60_000)) });
      expect((await store.putDelegation(d("delegations/root"))).subject).toBe("delegations/root");
      // A second put with the same name keeps the first record.
      expect((await store.putDelegation({ ...d("delegations/root"), subject: "other" })).subject).toBe("delegations/root");
      await store.putDelegation(d("delegations/a", "delegations/root"));
      await store.putDelegation(d("delegations/a1", "delegations/a"));
      await store.putDelegation(d("delegations/b", "delegations/root"));
      expect((await store.listDelegationSubtree("delegations/root")).map((x) => x.name)).toEqual(["delegations/root", "delegations/a", "delegations/b", "delegations/a1"]);
      const revoked = await store.revokeDelegationSubtree("delegations/a", new Date(), "test");
      expect(revoked.map((x) => x.name).sort()).toEqual(["delegations/a", "delegations/a1"]);
      expect((await store.getDelegation("delegations/a1"))?.revokeReason).toBe("test");
      expect((await store.getDelegation("delegations/b"))?.revokeTime).toBeUndefined();
      expect(await store.revokeDelegationSubtree("delegations/a", new Date(), "again")).toEqual([]);
      expect((await store.revokeDelegationSubtree("delegations/root", new Date(), "all")).map((x) => x.name).sort()).toEqual(["delegations/b", "delegations/root"]);
      expect(await store.getDelegation("delegations/none")).toBeUndefined();
    });

    it("keeps everything across a reopen, and creates a secret only once", async () => {
      const op = operation();
      await store.createOperation({ operation: op, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) });
      const secret = await store.getOrCreateSecret("k", () => "first");
      expect(await store.getOrCreateSecret("k", () => "second")).toBe("first");
      await store.close();
      store = await reopen();
      expect((await store.getOperation(op.name))?.name).toBe(op.name);
      expect((await store.readEvents(0n, 10)).map((e) => e.event.operation)).toEqual([op.name]);
      expect(await store.getOrCreateSecret("k", () => "third")).toBe(secret);
    });
  });
}
