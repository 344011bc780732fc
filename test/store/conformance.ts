// The store conformance suite: every OperationStore implementation must pass it unchanged.
// test/store/*.test.ts run it against each backend.
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import { create, fromBinary, toBinary, type Message } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GENESIS_HASH, recordHash, type AuditDraft } from "../../src/model/audit-chain.js";
import { AuditCheckpointSchema, type AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { BudgetDimension, BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DelegationSchema, DelegationScopeSchema, type Delegation } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import {
  CancelAttributesSchema,
  CompleteAttributesSchema,
  FailureAttributesSchema,
  OperationEventSchema,
  ProgressAttributesSchema,
  RetryAttributesSchema,
  StartAttributesSchema,
  type OperationEvent,
} from "../../src/gen/agentmachine/v1/event_pb.js";
import {
  OperationSchema,
  OperationSpecSchema,
  PolicyDecisionSchema,
  StopCauseSchema,
  StopReason,
  type Operation,
} from "../../src/gen/agentmachine/v1/operation_pb.js";
import { McpUpstreamSchema } from "../../src/gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { PolicyBundleSchema } from "../../src/gen/agentmachine/v1/policy_pb.js";
import { EventType, OperationType, PolicyGate, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import {
  LEGACY_IDEMPOTENCY_SCOPE,
  type AccountState,
  type AuditQuery,
  type ChildAccount,
  type KeyedCreate,
  type OperationStore,
  type RequestKey,
  type EventSelection,
  type StoredEvent,
} from "../../src/store/store.js";
import { denialCodeText, gatesText } from "../../src/model/audit-decision-text.js";
import { type RowEvent, storedEncoding } from "../../src/store/stored-messages.js";

// Builders of operations (each with a new name and request id) and events; the PostgreSQL replica
// tests use them too.
/** The idempotency scope the suite's operations are created in (a caller's delegation). */
export const SCOPE = "delegations/conformance";
let counter = 0;
export function operation(overrides: Partial<Operation> = {}): Operation {
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

export function event(name: string, type: EventType, state: TaskState, time = new Date()) {
  return create(OperationEventSchema, { operation: name, type, state, time: timestampFromDate(time), attempt: 1 });
}

/**
 * One event of each attributes case with every field set (none at its zero value), as a store
 * holds them for `name` before it gives them a sequence.
 */
export function eventsWithEveryField(name: string): OperationEvent[] {
  const cause = { reason: StopReason.BUDGET_EXHAUSTED, message: "tokens ran out — ünïcode", dimension: BudgetDimension.TOKENS };
  const attributes: OperationEvent["attributes"][] = [
    {
      case: "start",
      value: create(StartAttributesSchema, {
        policyDecisions: [
          { gate: PolicyGate.TOOL_GRANT, rule: "r1", bundleDigest: "sha256:ab", allowed: true, reason: "allowed by r1" },
          { gate: PolicyGate.TOOL_GRANT, rule: "r2", bundleDigest: "sha256:cd", allowed: true, reason: "and by r2" },
        ],
      }),
    },
    {
      case: "progress",
      value: create(ProgressAttributesSchema, {
        message: "half way",
        percent: 50,
        budgetWarnings: [{ dimension: BudgetDimension.MODEL_CALLS, used: 2n ** 40n, limit: 2n ** 63n + 5n }],
      }),
    },
    { case: "failure", value: create(FailureAttributesSchema, { cause }) },
    { case: "retry", value: create(RetryAttributesSchema, { delay: { seconds: 3n, nanos: 500 }, cause }) },
    { case: "cancel", value: create(CancelAttributesSchema, { cause }) },
    { case: "complete", value: create(CompleteAttributesSchema, { message: "done" }) },
  ];
  return attributes.map((value, index) => {
    const full = event(name, EventType.PROGRESS, TaskState.RUNNING, new Date(1_700_000_000_123 + index));
    full.time!.nanos += 456;
    full.attempt = 300 + index;
    full.attributes = value;
    return full;
  });
}

/** Event types and states for histories of varied events (the history-page and subscription tests). */
export const EVENT_STEPS: readonly [EventType, TaskState][] = [
  [EventType.PROGRESS, TaskState.QUEUED],
  [EventType.START, TaskState.RUNNING],
  [EventType.PROGRESS, TaskState.RUNNING],
  [EventType.COMPLETE, TaskState.COMPLETED],
];

function budget(init: Partial<Record<"modelCalls" | "tokens" | "connectorCalls", bigint>>): Budget {
  return create(BudgetSchema, init);
}

function delegation(name: string, parent = ""): Delegation {
  return create(DelegationSchema, {
    name,
    parent,
    subject: name,
    scope: { budget: { modelCalls: 100n } },
    expireTime: timestampFromDate(new Date(Date.now() + 60_000)),
  });
}

/**
 * What the store holds for `accounts`, as a reservation check sees it: a create whose check
 * records the states and refuses, so the probe itself stores nothing.
 */
async function accountStates(store: OperationStore, accounts: string[]): Promise<AccountState[]> {
  let seen: AccountState[] = [];
  const probe = new Error("probe");
  await expect(
    store.createOperation({
      idempotencyScope: SCOPE,
      operation: operation(),
      requestDigest: "probe",
      reservation: {
        accounts,
        amount: budget({}),
        check: (states) => {
          seen = [...states];
          return probe;
        },
      },
    }),
  ).rejects.toBe(probe);
  return seen;
}

/** An audit record's draft, as a service makes one. */
/** What a create without a key made (it always creates). */
function made<T>(result: Promise<KeyedCreate<T>>): Promise<T> {
  return result.then((written) => {
    if (written.kind !== "created") throw new Error(`expected a create, got ${written.kind}`);
    return written.value;
  });
}

export function auditDraft(overrides: Partial<AuditDraft> = {}): AuditDraft {
  return {
    principal: "alice",
    delegation: "delegations/a",
    delegationChain: ["delegations/root", "delegations/a"],
    rpc: "/agentmachine.v1.OperationService/SubmitOperation",
    operationType: OperationType.TOOL_GRANT_APPLY,
    commandRef: "urn:srcos:workspace-operation-command:tool-grant-apply",
    decision: { allowed: true },
    requestDigest: "ab".repeat(32),
    ...overrides,
  };
}

/** Asserts that `records` are the whole chain from sequence 1: gapless, each linked to the one before and hashed right. */
export function expectWholeChain(records: AuditRecord[]): void {
  records.forEach((record, i) => {
    expect(record.sequence).toBe(BigInt(i + 1));
    expect(record.previousHash).toBe(i === 0 ? GENESIS_HASH : records[i - 1]!.hash);
    expect(record.hash).toBe(recordHash(record));
  });
}

/**
 * What a store must show of a row that a schema before idempotency scopes stored (request ids
 * unique across the store), once opened: the row is in the legacy scope, found there by its
 * request id and in no other scope, and its request id is free for new operations elsewhere.
 */
export async function expectLegacyRow(store: OperationStore, old: Operation, requestDigest: string): Promise<void> {
  expect(await store.findByRequestId(LEGACY_IDEMPOTENCY_SCOPE, old.requestId)).toEqual({ requestDigest, operation: old });
  expect(await store.findByRequestId(SCOPE, old.requestId)).toBeUndefined();
  const beside = operation({ requestId: old.requestId, profile: old.profile });
  expect(await store.createOperation({ idempotencyScope: SCOPE, operation: beside, requestDigest })).toMatchObject({ kind: "created" });
  expect((await store.listOperations({ limit: 10, profile: old.profile })).map((o) => o.name).sort()).toEqual([old.name, beside.name].sort());
}

/** A page's events as plain values (a page's events decode on demand: RowEvent), to compare with readEvents'. */
export function asRead(events: readonly StoredEvent[]): StoredEvent[] {
  return events.map(({ event: e, profile, operationType, labels }) => ({ event: e, profile, operationType, labels }));
}

/**
 * What a store's history pages must do with event rows written before the event_type, state and
 * data_form columns (NULL in the first two, 0 in data_form): `nullify` makes every row such a
 * row. A page filtered by type or state selects them as "maybe" (the reader filters the decoded
 * events exactly); the other filters, whose columns were always written, still apply in the
 * query. Their rows are not taken as exact, yet their events, decoded, still have their rows'
 * bytes as their encoding (decodeStoredEvent checks them).
 */
export async function expectLegacyEventsSelectedAsMaybe(store: OperationStore, nullify: () => Promise<void>): Promise<void> {
  const mine = operation({ profile: "profiles/legacy-a" });
  const other = operation({ profile: "profiles/legacy-b" });
  for (const op of [mine, other]) {
    await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
    for (const [type, state] of EVENT_STEPS)
      await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: event(op.name, type, state) });
  }
  await nullify();
  const { latest } = await store.eventBounds();
  const page = (selection: EventSelection) => store.readEventPage({ ...selection, after: 0n, through: latest, limit: 100 });
  const all = await store.readEvents(0n, 100);
  expect(all).toHaveLength(2 * EVENT_STEPS.length);
  expect(asRead((await page({ types: [EventType.COMPLETE] })).events)).toEqual(all);
  expect(asRead((await page({ states: [TaskState.COMPLETED] })).events)).toEqual(all);
  expect(asRead((await page({ types: [EventType.COMPLETE], profiles: [mine.profile] })).events)).toEqual(
    all.filter((stored) => stored.profile === mine.profile),
  );
  for (const stored of (await page({})).events) {
    expect((stored as RowEvent).exactData()).toBeUndefined();
    expect(Buffer.from(storedEncoding(stored.event)!).toString("hex")).toBe(Buffer.from(toBinary(OperationEventSchema, stored.event)).toString("hex"));
  }
}

/**
 * `message` as a version before 0.x wrote it: with `value` in field 1, where StopCause.reason and
 * PolicyDecision.gate were strings (now enums under other numbers). Encoded, it is byte for byte
 * what that version stored.
 */
function writtenBefore<T extends Message>(message: T, value: string): T {
  message.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: new BinaryWriter().string(value).finish() }];
  return message;
}

async function heldOf(store: OperationStore, account: string): Promise<Budget> {
  return (await accountStates(store, [account]))[0]!.held;
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
      expect(await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d1" })).toMatchObject({ kind: "created" });
      expect((await store.getOperation(op.name))?.requestId).toBe(op.requestId);
      expect(await store.findByRequestId(SCOPE, op.requestId)).toMatchObject({ requestDigest: "d1", operation: { name: op.name } });
      expect(await store.findByRequestId("delegations/other", op.requestId)).toBeUndefined();
      expect(await store.getOperation("operations/none")).toBeUndefined();
    });

    it("keeps request ids apart by idempotency scope: one id in two scopes is two operations, found each in its own", async () => {
      const mine = operation();
      const theirs = operation({ requestId: mine.requestId });
      const created = await Promise.all([
        store.createOperation({ idempotencyScope: "delegations/mine", operation: mine, requestDigest: "a" }),
        store.createOperation({ idempotencyScope: "delegations/theirs", operation: theirs, requestDigest: "b" }),
      ]);
      expect(created.map((result) => result.kind)).toEqual(["created", "created"]);
      expect(await store.findByRequestId("delegations/mine", mine.requestId)).toMatchObject({ requestDigest: "a", operation: { name: mine.name } });
      expect(await store.findByRequestId("delegations/theirs", mine.requestId)).toMatchObject({ requestDigest: "b", operation: { name: theirs.name } });
      // Within a scope the key still holds: a retry is the existing operation, another body a conflict.
      const retry = operation({ requestId: mine.requestId });
      expect(await store.createOperation({ idempotencyScope: "delegations/theirs", operation: retry, requestDigest: "b" })).toMatchObject({
        kind: "existing",
        operation: { name: theirs.name },
      });
      expect(await store.createOperation({ idempotencyScope: "delegations/mine", operation: retry, requestDigest: "c" })).toMatchObject({
        kind: "request-id-conflict",
        operation: { name: mine.name },
      });
      expect(await store.getOperation(retry.name)).toBeUndefined();
      // Reopened (another replica, or after a restart), the scopes hold.
      await store.close();
      store = await reopen();
      expect(await store.findByRequestId("delegations/theirs", mine.requestId)).toMatchObject({ operation: { name: theirs.name } });
    });

    it("answers a repeated request id with the existing operation, or a conflict when the body differs", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "same" });
      const again = operation({ requestId: op.requestId });
      expect(await store.createOperation({ idempotencyScope: SCOPE, operation: again, requestDigest: "same" })).toMatchObject({
        kind: "existing",
        operation: { name: op.name },
      });
      expect(await store.createOperation({ idempotencyScope: SCOPE, operation: again, requestDigest: "other" })).toMatchObject({
        kind: "request-id-conflict",
        operation: { name: op.name },
      });
      expect(await store.getOperation(again.name)).toBeUndefined();
    });

    it("registers a profile once, atomically with its create operation", async () => {
      const first = operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/x" });
      const createsProfile = { name: "profiles/x", profileType: ProfileType.PERSONAL };
      const [a, b] = await Promise.all([
        store.createOperation({ idempotencyScope: SCOPE, operation: first, requestDigest: "1", createsProfile }),
        store.createOperation({
          idempotencyScope: SCOPE,
          operation: operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/x" }),
          requestDigest: "2",
          createsProfile,
        }),
      ]);
      expect([a.kind, b.kind].sort()).toEqual(["created", "profile-exists"]);
      expect(await store.getProfile("profiles/x")).toEqual(createsProfile);
      expect(await store.getProfile("profiles/y")).toBeUndefined();
    });

    it("assigns one contiguous, increasing sequence to events across concurrent writers", async () => {
      const published: bigint[] = [];
      store.onCommit((events) => published.push(...events.map((e) => e.event.sequence)));
      const ops = Array.from({ length: 20 }, () => operation());
      await Promise.all(ops.map((op) => store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" })));
      const results = await Promise.all(
        ops.map((op) =>
          store.updateOperation({
            operation: { ...op, state: TaskState.RUNNING },
            expectedState: TaskState.QUEUED,
            event: event(op.name, EventType.START, TaskState.RUNNING),
          }),
        ),
      );
      const sequences = results.map((r) => (r.kind === "updated" ? r.event!.event.sequence : -1n)).sort((x, y) => (x < y ? -1 : 1));
      expect(sequences).toEqual(sequences.map((_, i) => sequences[0]! + BigInt(i)));
      const read = await store.readEvents(0n, 100);
      expect(read.map((e) => e.event.sequence)).toEqual(sequences);
      expect(await store.eventBounds()).toEqual({ oldest: sequences[0], latest: sequences[sequences.length - 1] });
      // Published in sequence order too, whatever order the writers were answered in.
      expect(published).toEqual(sequences);
    });

    it("creates one operation when the same request races, and holds its reservation once", async () => {
      const op = operation({ profile: "profiles/once" });
      const reservation = { accounts: ["profiles/once"], amount: budget({ modelCalls: 2n }), check: () => undefined };
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          store.createOperation({
            idempotencyScope: SCOPE,
            // Each attempt with its own name, as a retried submit would have.
            operation: i === 0 ? op : operation({ requestId: op.requestId, profile: "profiles/once" }),
            requestDigest: "same",
            reservation,
            event: event(op.name, EventType.START, TaskState.QUEUED),
          }),
        ),
      );
      expect(results.map((r) => r.kind).sort()).toEqual(["created", "existing", "existing", "existing", "existing", "existing"]);
      const names = new Set(results.map((r) => ("operation" in r ? r.operation.name : "")));
      expect(names.size).toBe(1);
      expect(await store.getOperation([...names][0]!)).toBeDefined();
      expect((await heldOf(store, "profiles/once")).modelCalls).toBe(2n);
      expect(await store.readEvents(0n, 10)).toHaveLength(1);
      expect(await store.listOperations({ limit: 10, profile: "profiles/once" })).toHaveLength(1);
    });

    it("applies an update only from the expected state, and records the event with it", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const running = { ...op, state: TaskState.RUNNING, attempt: 1 };
      const first = await store.updateOperation({
        operation: running,
        expectedState: TaskState.QUEUED,
        event: event(op.name, EventType.START, TaskState.RUNNING),
      });
      expect(first.kind).toBe("updated");
      const stale = await store.updateOperation({
        operation: { ...op, state: TaskState.CANCELLED },
        expectedState: TaskState.QUEUED,
        event: event(op.name, EventType.CANCEL, TaskState.CANCELLED),
      });
      expect(stale).toMatchObject({ kind: "state-changed", operation: { state: TaskState.RUNNING } });
      const stored = await store.getOperation(op.name);
      expect(stored?.state).toBe(TaskState.RUNNING);
      expect(stored?.lastSequence).toBe(first.kind === "updated" ? first.event!.event.sequence : 0n);
      expect((await store.readEvents(0n, 10)).map((e) => e.event.type)).toEqual([EventType.START]);
      expect(await store.updateOperation({ operation: operation(), expectedState: TaskState.QUEUED })).toEqual({ kind: "not-found" });
    });

    it("reads operations and events written before 0.x with their string stop reasons and gates as the enums", async () => {
      const legacyCause = () => writtenBefore(create(StopCauseSchema, { message: "the runner stopped" }), "runner_lost");
      const op = operation({ policyDecisions: [writtenBefore(create(PolicyDecisionSchema, { rule: "r", allowed: true }), "toolGrant")] });
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const retrying = { ...op, state: TaskState.RETRYING, stopCause: legacyCause() };
      const retry = event(op.name, EventType.RETRY, TaskState.RETRYING);
      retry.attributes = { case: "retry", value: create(RetryAttributesSchema, { cause: legacyCause() }) };
      expect((await store.updateOperation({ operation: retrying, expectedState: TaskState.QUEUED, event: retry })).kind).toBe("updated");
      const upgraded = { reason: StopReason.RUNNER_LOST, message: "the runner stopped" };
      for (const read of [await store.getOperation(op.name), (await store.listOperations({ limit: 10 }))[0]]) {
        expect(read).toMatchObject({ stopCause: upgraded, policyDecisions: [{ gate: PolicyGate.TOOL_GRANT, rule: "r" }] });
        // Nothing of the old form is left to be written back.
        expect([read?.stopCause?.$unknown, read?.policyDecisions[0]?.$unknown]).toEqual([undefined, undefined]);
      }
      const [stored] = await store.readEvents(0n, 10);
      expect(stored?.event.attributes).toMatchObject({ case: "retry", value: { cause: upgraded } });
      // Its row's bytes hold the old form: a replay must not send them as they are.
      expect(storedEncoding(stored!.event)).toBeUndefined();
      const [paged] = (await store.readEventPage({ after: 0n, through: (await store.eventBounds()).latest, limit: 10 })).events;
      expect((paged as RowEvent).exactData()).toBeUndefined();
      expect(paged!.event).toEqual(stored!.event);
    });

    it("reads events with every field set back as written, with their rows' bytes as exactly their encoding, by readEvents and readEventPage", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const written = eventsWithEveryField(op.name);
      for (const full of written) expect((await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: full })).kind).toBe("updated");
      const { latest } = await store.eventBounds();
      for (const read of [await store.readEvents(0n, 100), (await store.readEventPage({ after: 0n, through: latest, limit: 100 })).events]) {
        expect(read.map((stored) => stored.event)).toEqual(written.map((full, index) => ({ ...full, sequence: BigInt(index + 1) })));
        for (const { event: e } of read) {
          const encoding = storedEncoding(e);
          expect(encoding && Buffer.from(encoding).toString("hex")).toBe(Buffer.from(toBinary(OperationEventSchema, e)).toString("hex"));
          expect(fromBinary(OperationEventSchema, encoding!)).toEqual(e);
        }
      }
      // A page's rows are marked exact: a replay frames them from their bytes without decoding.
      const page = await store.readEventPage({ after: 0n, through: latest, limit: 100 });
      expect(page.events.map((stored) => Buffer.from((stored as RowEvent).exactData()!).toString("hex"))).toEqual(
        written.map((full) => Buffer.from(toBinary(OperationEventSchema, full)).toString("hex")),
      );
    });

    it("writes an event holding a field this schema does not know as a row not taken as exact: a replay decodes and encodes it, field kept", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const [written] = eventsWithEveryField(op.name);
      written!.$unknown = [{ no: 7, wireType: WireType.Varint, data: Uint8Array.of(42) }];
      expect((await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: written! })).kind).toBe("updated");
      const [paged] = (await store.readEventPage({ after: 0n, through: (await store.eventBounds()).latest, limit: 10 })).events;
      expect((paged as RowEvent).exactData()).toBeUndefined();
      const hex = (e: OperationEvent) => Buffer.from(toBinary(OperationEventSchema, e)).toString("hex");
      expect(hex(paged!.event)).toBe(hex({ ...written!, sequence: 1n }));
    });

    it("keeps audit records written before 0.x (string code and gate) as they were hashed: they read, link and verify", async () => {
      const old = await store.appendAudit(auditDraft({ decision: { allowed: false, code: "permission_denied", gate: "toolGrant", rule: "no-curl" } }));
      const current = await store.appendAudit(
        auditDraft({ decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED, gates: [PolicyGate.TOOL_GRANT], rule: "no-curl" } }),
      );
      const records = await store.listAuditRecords({ afterSequence: 0n, limit: 10 });
      expect(records).toEqual([old, current]);
      expectWholeChain(records);
      expect(records.map((record) => [denialCodeText(record.decision!), gatesText(record.decision!)])).toEqual([
        ["PERMISSION_DENIED", "toolGrant"],
        ["PERMISSION_DENIED", "toolGrant"],
      ]);
    });

    it("publishes committed events to onCommit listeners in sequence order, with their filter fields", async () => {
      const published: StoredEvent[] = [];
      store.onCommit((events) => published.push(...events));
      const op = operation({ labels: { team: "b" }, profile: "profiles/q", type: OperationType.EXECUTION_START });
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) });
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
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      // Same name, another request id: the insert fails after its event was appended.
      const clash = operation({ name: op.name });
      await expect(
        store.createOperation({ idempotencyScope: SCOPE, operation: clash, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) }),
      ).rejects.toThrow();
      expect(published).toEqual([]);
      expect(await store.readEvents(0n, 10)).toEqual([]);
      expect(await store.findByRequestId(SCOPE, clash.requestId)).toBeUndefined();
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
        await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
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
      await store.createOperation({ idempotencyScope: SCOPE, operation: queued, requestDigest: "d" });
      await store.createOperation({ idempotencyScope: SCOPE, operation: done, requestDigest: "d" });
      expect((await store.listActiveOperations()).map((o) => o.name)).toEqual([queued.name]);
    });

    it("compacts events by count and by age, never reusing a sequence", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const old = new Date(Date.now() - 3_600_000);
      for (let i = 0; i < 10; i += 1) {
        await store.updateOperation({
          operation: op,
          expectedState: TaskState.QUEUED,
          event: event(op.name, EventType.PROGRESS, TaskState.QUEUED, i < 2 ? old : new Date()),
        });
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
      const d = (name: string, parent = "") =>
        create(DelegationSchema, { name, parent, subject: name, expireTime: timestampFromDate(new Date(Date.now() + 60_000)) });
      expect((await store.putDelegation(d("delegations/root"))).subject).toBe("delegations/root");
      // A second put with the same name keeps the first record.
      expect((await store.putDelegation({ ...d("delegations/root"), subject: "other" })).subject).toBe("delegations/root");
      await store.putDelegation(d("delegations/a", "delegations/root"));
      await store.putDelegation(d("delegations/a1", "delegations/a"));
      await store.putDelegation(d("delegations/b", "delegations/root"));
      expect((await store.listDelegationSubtree("delegations/root")).map((x) => x.delegation.name)).toEqual([
        "delegations/root",
        "delegations/a",
        "delegations/b",
        "delegations/a1",
      ]);
      const revoked = await store.revokeDelegationSubtree("delegations/a", new Date(), "test");
      expect(revoked.map((x) => x.name).sort()).toEqual(["delegations/a", "delegations/a1"]);
      expect((await store.getDelegation("delegations/a1"))?.revokeReason).toBe("test");
      expect((await store.getDelegation("delegations/b"))?.revokeTime).toBeUndefined();
      expect(await store.revokeDelegationSubtree("delegations/a", new Date(), "again")).toEqual([]);
      expect((await store.revokeDelegationSubtree("delegations/root", new Date(), "all")).map((x) => x.name).sort()).toEqual([
        "delegations/b",
        "delegations/root",
      ]);
      expect(await store.getDelegation("delegations/none")).toBeUndefined();
    });

    it("keeps a delegation's mount_prefixes and an operation's admitted mounts as they were stored", async () => {
      const scoped = Object.assign(delegation("delegations/mounts"), { scope: create(DelegationScopeSchema, { mountPrefixes: ["/src/app", "*"] }) });
      await store.putDelegation(scoped);
      expect((await store.getDelegation("delegations/mounts"))?.scope?.mountPrefixes).toEqual(["/src/app", "*"]);
      const mounts = [
        { hostPath: "/src/app", path: "/project", readWrite: false },
        { hostPath: "out", path: "/out", readWrite: true },
      ];
      const op = operation({
        type: OperationType.EXECUTION_START,
        spec: create(OperationSpecSchema, { kind: { case: "executionStart", value: { argv: ["true"], mounts } } }),
      });
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "m" });
      const stored = (await store.getOperation(op.name))?.spec?.kind;
      expect(stored?.case === "executionStart" && stored.value.mounts.map(({ hostPath, path, readWrite }) => ({ hostPath, path, readWrite }))).toEqual(mounts);
    });

    it("pages a subtree by position (depth, then name), and leaves revoked and expired delegations out when asked", async () => {
      const d = (name: string, parent = "", expiresInMs = 60_000) =>
        create(DelegationSchema, { name, parent, subject: name, expireTime: timestampFromDate(new Date(Date.now() + expiresInMs)) });
      await store.putDelegation(d("delegations/t"));
      for (const child of ["c", "a", "b"]) await store.putDelegation(d(`delegations/t-${child}`, "delegations/t"));
      await store.putDelegation(d("delegations/t-a-1", "delegations/t-a"));
      await store.putDelegation(d("delegations/t-b-1", "delegations/t-b", -1_000));
      await store.revokeDelegationSubtree("delegations/t-c", new Date(), "test");
      const names = (entries: { delegation: { name: string } }[]) => entries.map((e) => e.delegation.name);
      const all = ["delegations/t", "delegations/t-a", "delegations/t-b", "delegations/t-c", "delegations/t-a-1", "delegations/t-b-1"];
      const first = await store.listDelegationSubtree("delegations/t", { limit: 2 });
      expect(first.map((e) => [e.delegation.name, e.depth])).toEqual([
        ["delegations/t", 0],
        ["delegations/t-a", 1],
      ]);
      // Pages taken from each previous page's last entry cover the listing exactly once, in order.
      const paged = [...first];
      for (let last = first[first.length - 1]!; ; ) {
        const page = await store.listDelegationSubtree("delegations/t", { after: { depth: last.depth, name: last.delegation.name }, limit: 2 });
        paged.push(...page);
        if (page.length < 2) break;
        last = page[page.length - 1]!;
      }
      expect(names(paged)).toEqual(all);
      expect(names(await store.listDelegationSubtree("delegations/t", { limit: 10, activeAt: new Date() }))).toEqual([
        "delegations/t",
        "delegations/t-a",
        "delegations/t-b",
        "delegations/t-a-1",
      ]);
      expect(
        names(await store.listDelegationSubtree("delegations/t", { after: { depth: 1, name: "delegations/t-a" }, limit: 10, activeAt: new Date() })),
      ).toEqual(["delegations/t-b", "delegations/t-a-1"]);
    });

    it("reserves budget at create: the check sees each account's held amount and a delegation's children", async () => {
      await store.putDelegation(delegation("delegations/r"));
      await store.putChildDelegation(delegation("delegations/r-child", "delegations/r"), () => undefined);
      const seen: AccountState[][] = [];
      const reserve = (amount: Budget) =>
        store.createOperation({
          idempotencyScope: SCOPE,
          operation: operation({ delegation: "delegations/r", profile: "profiles/p" }),
          requestDigest: "d",
          reservation: {
            accounts: ["delegations/r", "profiles/p"],
            amount,
            check: (states) => {
              seen.push([...states]);
              return undefined;
            },
          },
        });
      expect(await reserve(budget({ modelCalls: 3n, tokens: 100n }))).toMatchObject({ kind: "created" });
      expect(seen[0]!.map((s) => s.account)).toEqual(["delegations/r", "profiles/p"]);
      expect(seen[0]!.map((s) => s.held.modelCalls)).toEqual([0n, 0n]);
      expect(seen[0]![0]!.children.map((c) => [c.delegation.name, c.held.modelCalls])).toEqual([["delegations/r-child", 0n]]);
      expect(seen[0]![1]!.children).toEqual([]);
      expect(await reserve(budget({ modelCalls: 2n }))).toMatchObject({ kind: "created" });
      expect(seen[1]!.map((s) => [s.held.modelCalls, s.held.tokens])).toEqual([
        [3n, 100n],
        [3n, 100n],
      ]);
      // A reservation held on the whole chain (child, parent): the parent's account then
      // reports what the child holds.
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: operation({ delegation: "delegations/r-child", profile: "profiles/p" }),
        requestDigest: "d",
        reservation: { accounts: ["delegations/r-child", "delegations/r", "profiles/p"], amount: budget({ tokens: 7n }), check: () => undefined },
      });
      const [parentAccount] = await accountStates(store, ["delegations/r"]);
      expect(parentAccount!.held.tokens).toBe(107n);
      expect(parentAccount!.children.map((c) => [c.delegation.name, c.held.tokens])).toEqual([["delegations/r-child", 7n]]);
      // A refusal throws its error and stores nothing: no operation, no event, no holding.
      const published: StoredEvent[] = [];
      store.onCommit((events) => published.push(...events));
      const refusal = new Error("over budget");
      const refused = operation({ delegation: "delegations/r", profile: "profiles/p" });
      await expect(
        store.createOperation({
          idempotencyScope: SCOPE,
          operation: refused,
          requestDigest: "d",
          event: event(refused.name, EventType.START, TaskState.QUEUED),
          reservation: { accounts: ["delegations/r", "profiles/p"], amount: budget({ modelCalls: 50n }), check: () => refusal },
        }),
      ).rejects.toBe(refusal);
      expect(await store.getOperation(refused.name)).toBeUndefined();
      expect(await store.findByRequestId(SCOPE, refused.requestId)).toBeUndefined();
      expect(await store.readEvents(0n, 10)).toEqual([]);
      expect(published).toEqual([]);
      expect((await heldOf(store, "delegations/r")).modelCalls).toBe(5n);
      expect((await heldOf(store, "profiles/p")).tokens).toBe(107n);
      // An account nothing was ever reserved from holds nothing.
      expect(await accountStates(store, ["profiles/never"])).toMatchObject([{ account: "profiles/never", held: { modelCalls: 0n }, children: [] }]);
      // readAccounts reads the same states without a write, in the order asked.
      const read = await store.readAccounts(["profiles/p", "delegations/r", "profiles/none"]);
      expect(read.map((a) => [a.account, a.held.modelCalls, a.held.tokens])).toEqual([
        ["profiles/p", 5n, 107n],
        ["delegations/r", 5n, 107n],
        ["profiles/none", 0n, 0n],
      ]);
      expect(read[1]!.children.map((c) => [c.delegation.name, c.held.tokens])).toEqual([["delegations/r-child", 7n]]);
      expect(read[0]!.children).toEqual([]);
    });

    it("never admits more than the limit when reservations race", async () => {
      const limit = 10n;
      const results = await Promise.allSettled(
        Array.from({ length: 30 }, () =>
          store.createOperation({
            idempotencyScope: SCOPE,
            operation: operation({ profile: "profiles/race" }),
            requestDigest: "d",
            reservation: {
              accounts: ["delegations/race", "profiles/race"],
              amount: budget({ modelCalls: 1n }),
              check: ([delegationAccount, profileAccount]) =>
                delegationAccount!.held.modelCalls + 1n > limit || profileAccount!.held.modelCalls + 1n > limit ? new Error("limit") : undefined,
            },
          }),
        ),
      );
      const admitted = results.filter((r) => r.status === "fulfilled" && r.value.kind === "created");
      expect(admitted).toHaveLength(Number(limit));
      expect(results.filter((r) => r.status === "rejected")).toHaveLength(30 - Number(limit));
      expect((await heldOf(store, "delegations/race")).modelCalls).toBe(limit);
      expect((await heldOf(store, "profiles/race")).modelCalls).toBe(limit);
      expect(await store.listOperations({ limit: 100, profile: "profiles/race" })).toHaveLength(Number(limit));
    });

    it("settles a reservation in the update that ends the operation: each account gives back what was reserved and keeps what was spent, never more than was reserved", async () => {
      const accounts = ["delegations/s", "profiles/s"];
      const op = operation({ profile: "profiles/s" });
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: op,
        requestDigest: "d",
        reservation: { accounts, amount: budget({ modelCalls: 10n, tokens: 1000n }), check: () => undefined },
      });
      const other = operation({ profile: "profiles/s" });
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: other,
        requestDigest: "d",
        reservation: { accounts: ["profiles/s"], amount: budget({ modelCalls: 1n, connectorCalls: 5n }), check: () => undefined },
      });
      expect((await heldOf(store, "profiles/s")).modelCalls).toBe(11n);
      // An update that does not apply settles nothing.
      const stale = await store.updateOperation({
        operation: { ...op, state: TaskState.COMPLETED },
        expectedState: TaskState.RUNNING,
        settle: { spent: budget({}) },
      });
      expect(stale.kind).toBe("state-changed");
      expect((await heldOf(store, "profiles/s")).modelCalls).toBe(11n);
      const done = await store.updateOperation({
        operation: { ...op, state: TaskState.COMPLETED },
        expectedState: TaskState.QUEUED,
        event: event(op.name, EventType.COMPLETE, TaskState.COMPLETED),
        // Within the reservation in model calls; past it in tokens, and in connector calls, of which it reserved none.
        settle: { spent: budget({ modelCalls: 4n, tokens: 5000n, connectorCalls: 2n }) },
      });
      expect(done.kind).toBe("updated");
      const profileHeld = await heldOf(store, "profiles/s");
      expect([profileHeld.modelCalls, profileHeld.tokens, profileHeld.connectorCalls]).toEqual([5n, 1000n, 5n]);
      const delegationHeld = await heldOf(store, "delegations/s");
      expect([delegationHeld.modelCalls, delegationHeld.tokens, delegationHeld.connectorCalls]).toEqual([4n, 1000n, 0n]);
      // A reservation is settled once: settling again gives nothing back and keeps nothing more.
      const again = await store.updateOperation({
        operation: { ...op, state: TaskState.COMPLETED },
        expectedState: TaskState.COMPLETED,
        settle: { spent: budget({ modelCalls: 50n }) },
      });
      expect(again.kind).toBe("updated");
      expect((await heldOf(store, "profiles/s")).modelCalls).toBe(5n);
      // A modification settles too, from the reservation the store recorded.
      const modified = await store.modifyOperation(other.name, (current) => ({
        operation: { ...current, state: TaskState.CANCELLED },
        settle: { spent: budget({ connectorCalls: 1n }) },
      }));
      expect(modified.kind).toBe("modified");
      const after = await heldOf(store, "profiles/s");
      expect([after.modelCalls, after.tokens, after.connectorCalls]).toEqual([4n, 1000n, 1n]);
      expect((await heldOf(store, "delegations/s")).connectorCalls).toBe(0n);
      // An operation that reserved nothing settles nothing.
      const plain = operation({ profile: "profiles/s" });
      await store.createOperation({ idempotencyScope: SCOPE, operation: plain, requestDigest: "d" });
      await store.updateOperation({
        operation: { ...plain, state: TaskState.COMPLETED },
        expectedState: TaskState.QUEUED,
        settle: { spent: budget({ modelCalls: 9n }) },
      });
      expect((await heldOf(store, "profiles/s")).modelCalls).toBe(4n);
    });

    it("settles each reservation once when settlements race", async () => {
      const ops = Array.from({ length: 10 }, () => operation({ profile: "profiles/sr" }));
      for (const op of ops) {
        await store.createOperation({
          idempotencyScope: SCOPE,
          operation: op,
          requestDigest: "d",
          reservation: { accounts: ["profiles/sr"], amount: budget({ tokens: 10n }), check: () => undefined },
        });
      }
      expect((await heldOf(store, "profiles/sr")).tokens).toBe(100n);
      // Every operation settled three times at once, spending 1 token: 10 × 1 kept, the rest given back.
      await Promise.all(
        ops.flatMap((op) =>
          [1, 2, 3].map(() =>
            store.modifyOperation(op.name, (current) => ({ operation: { ...current, state: TaskState.COMPLETED }, settle: { spent: budget({ tokens: 1n }) } })),
          ),
        ),
      );
      expect((await heldOf(store, "profiles/sr")).tokens).toBe(10n);
    });

    it("modifies an operation in one commit, so concurrent increments are never lost", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const results = await Promise.all(
        Array.from({ length: 50 }, () =>
          store.modifyOperation(op.name, (current) => ({
            operation: { ...current, usage: budget({ ...current.usage, modelCalls: (current.usage?.modelCalls ?? 0n) + 1n }) },
          })),
        ),
      );
      expect(results.every((r) => r.kind === "modified")).toBe(true);
      expect((await store.getOperation(op.name))?.usage?.modelCalls).toBe(50n);
      expect(await store.readEvents(0n, 100)).toEqual([]);
    });

    it("refuses a second modification with the same once key, and reports unchanged and not-found", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const add = (current: Operation) => ({ operation: { ...current, usage: budget({ ...current.usage, tokens: (current.usage?.tokens ?? 0n) + 10n }) } });
      expect(await store.modifyOperation(op.name, add, "ticket-1")).toMatchObject({ kind: "modified", operation: { usage: { tokens: 10n } } });
      let called = false;
      const again = await store.modifyOperation(
        op.name,
        (current) => {
          called = true;
          return add(current);
        },
        "ticket-1",
      );
      expect(again).toMatchObject({ kind: "already-done", operation: { name: op.name, usage: { tokens: 10n } } });
      expect(called).toBe(false);
      // Racing uses of one key: exactly one applies.
      const raced = await Promise.all(Array.from({ length: 8 }, () => store.modifyOperation(op.name, add, "ticket-2")));
      expect(raced.map((r) => r.kind).sort()).toEqual([...Array<string>(7).fill("already-done"), "modified"]);
      expect((await store.getOperation(op.name))?.usage?.tokens).toBe(20n);
      // No change: "unchanged", with the stored operation, and nothing written.
      const unchanged = await store.modifyOperation(op.name, () => undefined);
      expect(unchanged).toMatchObject({ kind: "unchanged", operation: { name: op.name, usage: { tokens: 20n } } });
      expect(await store.modifyOperation("operations/none", add)).toEqual({ kind: "not-found" });
      expect(await store.readEvents(0n, 10)).toEqual([]);
    });

    it("appends a modification's event and publishes it after the commit; a failed modification keeps nothing", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const published: StoredEvent[] = [];
      const readsAtPublish: Promise<StoredEvent[]>[] = [];
      store.onCommit((events) => {
        published.push(...events);
        // Published after the commit: a read started now already sees the event.
        readsAtPublish.push(store.readEvents(events[0]!.event.sequence - 1n, 10));
      });
      const result = await store.modifyOperation(op.name, (current) => ({
        operation: { ...current, state: TaskState.RUNNING, attempt: 1 },
        event: event(op.name, EventType.START, TaskState.RUNNING),
      }));
      expect(result.kind).toBe("modified");
      const sequence = result.kind === "modified" ? result.event!.event.sequence : -1n;
      expect(published.map((e) => e.event.sequence)).toEqual([sequence]);
      expect(published[0]).toMatchObject({ profile: op.profile, operationType: op.type, labels: op.labels, event: { type: EventType.START } });
      expect((await Promise.all(readsAtPublish)).map((events) => events.map((e) => e.event.sequence))).toEqual([[sequence]]);
      const stored = await store.getOperation(op.name);
      expect(stored).toMatchObject({ state: TaskState.RUNNING, lastSequence: sequence });
      // A modification that throws rolls back whole: its once key is not kept, nothing is published.
      const boom = new Error("boom");
      await expect(
        store.modifyOperation(
          op.name,
          () => {
            throw boom;
          },
          "ticket-boom",
        ),
      ).rejects.toBe(boom);
      expect(await store.modifyOperation(op.name, () => undefined, "ticket-boom")).toMatchObject({ kind: "unchanged" });
      expect(published).toHaveLength(1);
      expect((await store.readEvents(0n, 10)).map((e) => e.event.sequence)).toEqual([sequence]);
      // Events of modifications, updates and creates share one contiguous sequence.
      const next = await store.updateOperation({
        operation: { ...stored!, state: TaskState.COMPLETED },
        expectedState: TaskState.RUNNING,
        event: event(op.name, EventType.COMPLETE, TaskState.COMPLETED),
      });
      expect(next.kind === "updated" && next.event!.event.sequence).toBe(sequence + 1n);
      expect(published.map((e) => e.event.sequence)).toEqual([sequence, sequence + 1n]);
    });

    it("records a child delegation only if its check passes over the siblings and what the parent holds", async () => {
      await store.putDelegation(delegation("delegations/pp"));
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: operation({ delegation: "delegations/pp" }),
        requestDigest: "d",
        reservation: { accounts: ["delegations/pp"], amount: budget({ modelCalls: 7n }), check: () => undefined },
      });
      const calls: { siblings: string[]; held: bigint }[] = [];
      const record = (siblings: ChildAccount[], parentHeld: Budget) => {
        calls.push({ siblings: siblings.map((s) => s.delegation.name).sort(), held: parentHeld.modelCalls });
        return undefined;
      };
      const first = await made(store.putChildDelegation(delegation("delegations/pp-1", "delegations/pp"), record));
      expect(first.name).toBe("delegations/pp-1");
      await store.putChildDelegation(delegation("delegations/pp-2", "delegations/pp"), record);
      expect(calls).toEqual([
        { siblings: [], held: 7n },
        { siblings: ["delegations/pp-1"], held: 7n },
      ]);
      const refusal = new Error("too wide");
      await expect(store.putChildDelegation(delegation("delegations/pp-3", "delegations/pp"), () => refusal)).rejects.toBe(refusal);
      expect(await store.getDelegation("delegations/pp-3")).toBeUndefined();
      // Racing issues under one parent: each check sees the children recorded before it.
      const raced = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) =>
          store.putChildDelegation(delegation(`delegations/pp-r${i}`, "delegations/pp"), (siblings) => (siblings.length >= 5 ? new Error("full") : undefined)),
        ),
      );
      expect(raced.filter((r) => r.status === "fulfilled")).toHaveLength(3);
      expect(await store.listDelegationSubtree("delegations/pp")).toHaveLength(6);
      // The parent's account now reports the children to a reservation's check.
      expect((await accountStates(store, ["delegations/pp"]))[0]!.children.map((c) => c.delegation.name)).toHaveLength(5);
    });

    it("records a child delegation's idempotency key in its commit: a retry carves nothing and names the first child, once however many race", async () => {
      await store.putDelegation(delegation("delegations/kp"));
      const key = (overrides: Partial<RequestKey> = {}): RequestKey => ({
        scope: "delegations/kp",
        rpc: "IssueDelegation",
        requestId: "r-1",
        requestDigest: "d",
        ...overrides,
      });
      let checks = 0;
      const check = () => {
        checks += 1;
        return undefined;
      };
      const raced = await Promise.all(
        Array.from({ length: 5 }, (_, i) => store.putChildDelegation(delegation(`delegations/kp-${i}`, "delegations/kp"), check, auditDraft(), key())),
      );
      expect(raced.filter((r) => r.kind === "created")).toHaveLength(1);
      const first = raced.find((r) => r.kind === "created")!;
      const firstName = first.kind === "created" ? first.value.name : "";
      expect(raced.filter((r) => r.kind === "existing").map((r) => r.kind === "existing" && r.name)).toEqual(Array(4).fill(firstName));
      expect(checks).toBe(1);
      expect(await store.listDelegationSubtree("delegations/kp")).toHaveLength(2);
      expect((await store.listAuditRecords({ afterSequence: 0n, limit: 100 })).filter((r) => r.resource.startsWith("delegations/kp-"))).toHaveLength(1);
      // Another body under the key: refused by name, nothing written.
      expect(await store.putChildDelegation(delegation("delegations/kp-x", "delegations/kp"), check, undefined, key({ requestDigest: "other" }))).toEqual({
        kind: "request-id-conflict",
        name: firstName,
      });
      // The same request id in another scope, or of another RPC, is another key.
      expect(
        (await store.putChildDelegation(delegation("delegations/kp-y", "delegations/kp"), check, undefined, key({ scope: "delegations/other" }))).kind,
      ).toBe("created");
      expect((await store.putChildDelegation(delegation("delegations/kp-z", "delegations/kp"), check, undefined, key({ rpc: "ApplyPolicyBundle" }))).kind).toBe(
        "created",
      );
      expect(await store.getDelegation("delegations/kp-x")).toBeUndefined();
    });

    it("records a policy bundle's idempotency key in its commit: a retry stores no version and names the first", async () => {
      const key: RequestKey = { scope: "delegations/admin", rpc: "ApplyPolicyBundle", requestId: "b-1", requestDigest: "d" };
      const bundle = (source: string) => create(PolicyBundleSchema, { profileType: ProfileType.PERSONAL, source, digest: source });
      const first = await made(store.putPolicyBundle(bundle("one"), auditDraft(), key));
      await made(store.putPolicyBundle(bundle("two")));
      expect(await store.putPolicyBundle(bundle("one"), auditDraft(), key)).toEqual({ kind: "existing", name: first.name });
      expect(await store.putPolicyBundle(bundle("three"), auditDraft(), { ...key, requestDigest: "other" })).toEqual({
        kind: "request-id-conflict",
        name: first.name,
      });
      expect((await store.listPolicyBundles()).map((b) => b.version)).toEqual([2n]);
      expect(await store.getPolicyBundle(first.name)).toMatchObject({ name: first.name, source: "one", version: 1n });
      for (const unknown of ["policyBundles/personal/versions/9", "policyBundles/nothing/versions/1", "delegations/x"])
        expect(await store.getPolicyBundle(unknown)).toBeUndefined();
      // Keys are durable: a reopened store still answers them.
      await store.close();
      store = await reopen();
      expect(await store.putPolicyBundle(bundle("one"), undefined, key)).toEqual({ kind: "existing", name: first.name });
    });

    describe("MCP upstreams", () => {
      const http = (name: string, url: string) => create(McpUpstreamSchema, { name, transport: { case: "http", value: { url } } });
      const stdio = (name: string) =>
        create(McpUpstreamSchema, { name, transport: { case: "stdio", value: { command: ["/usr/bin/node", "s.mjs"], egress: ["api.example:443"] } } });
      const names = async () => (await store.listMcpUpstreams()).map((upstream) => upstream.name);

      it("puts, replaces, lists in byte order and pages, deletes, and keeps them across a reopen", async () => {
        expect(await store.listMcpUpstreams()).toEqual([]);
        expect(await store.putMcpUpstream(http("notes", "http://a/mcp"))).toEqual({ created: true });
        expect(await store.putMcpUpstream(stdio("files"))).toEqual({ created: true });
        expect(await store.putMcpUpstream(http("a-b", "http://c/mcp"))).toEqual({ created: true });
        expect(await store.putMcpUpstream(http("notes", "http://b/mcp"))).toEqual({ created: false });
        // Byte order: `-` (0x2d) before digits and letters, whatever the database's collation.
        expect(await store.putMcpUpstream(http("ab", "http://d/mcp"))).toEqual({ created: true });
        expect(await names()).toEqual(["a-b", "ab", "files", "notes"]);
        expect((await store.listMcpUpstreams({ after: "ab", limit: 1 })).map((u) => u.name)).toEqual(["files"]);
        const all = await store.listMcpUpstreams();
        expect(all.find((u) => u.name === "notes")?.transport).toEqual({ case: "http", value: expect.objectContaining({ url: "http://b/mcp" }) });
        expect(all.find((u) => u.name === "files")?.transport.value).toMatchObject({ command: ["/usr/bin/node", "s.mjs"], egress: ["api.example:443"] });
        expect((await store.deleteMcpUpstream("ab"))?.name).toBe("ab");
        expect(await store.deleteMcpUpstream("ab")).toBeUndefined();
        await store.close();
        store = await reopen();
        expect(await names()).toEqual(["a-b", "files", "notes"]);
      });

      it("moves the version with every change, in its commit, and not for a delete of nothing", async () => {
        const start = await store.mcpUpstreamsVersion();
        await store.putMcpUpstream(http("notes", "http://a/mcp"));
        const afterPut = await store.mcpUpstreamsVersion();
        expect(afterPut).toBeGreaterThan(start);
        await store.putMcpUpstream(http("notes", "http://a/mcp"));
        const afterReplace = await store.mcpUpstreamsVersion();
        expect(afterReplace).toBeGreaterThan(afterPut);
        expect(await store.deleteMcpUpstream("none")).toBeUndefined();
        expect(await store.mcpUpstreamsVersion()).toBe(afterReplace);
        await store.deleteMcpUpstream("notes");
        expect(await store.mcpUpstreamsVersion()).toBeGreaterThan(afterReplace);
        // Concurrent puts are each counted: none is lost.
        const before = await store.mcpUpstreamsVersion();
        await Promise.all(Array.from({ length: 6 }, (_, i) => store.putMcpUpstream(http(`u${i % 2}`, `http://x/${i}`))));
        expect(await store.mcpUpstreamsVersion()).toBe(before + 6n);
        expect(await names()).toEqual(["u0", "u1"]);
      });

      it("seals a put's and a delete's audit record in their commit, naming mcp-upstreams/{name}; a delete of nothing records nothing", async () => {
        await store.putMcpUpstream(http("notes", "http://a/mcp"), auditDraft({ commandRef: "PutMcpUpstream" }));
        await store.deleteMcpUpstream("notes", auditDraft({ commandRef: "DeleteMcpUpstream" }));
        await store.deleteMcpUpstream("notes", auditDraft({ commandRef: "DeleteMcpUpstream" }));
        const records = await store.listAuditRecords({ afterSequence: 0n, limit: 100 });
        expect(records.map((r) => `${r.commandRef} ${r.resource}`)).toEqual(["PutMcpUpstream mcp-upstreams/notes", "DeleteMcpUpstream mcp-upstreams/notes"]);
        expectWholeChain(records);
      });
    });

    it("versions policy bundles per profile type, and lists the newest of each in profile type order", async () => {
      const bundle = (profileType: ProfileType, source: string) => create(PolicyBundleSchema, { profileType, source, digest: source, appliedBy: "test" });
      expect(await store.listPolicyBundles()).toEqual([]);
      const corporate = await made(store.putPolicyBundle(bundle(ProfileType.CORPORATE_FIREWALL, "c1")));
      expect(corporate).toMatchObject({ version: 1n, name: "policyBundles/corporate_firewall/versions/1", source: "c1" });
      expect(await made(store.putPolicyBundle(bundle(ProfileType.PERSONAL, "p1")))).toMatchObject({ version: 1n, name: "policyBundles/personal/versions/1" });
      expect(await made(store.putPolicyBundle(bundle(ProfileType.PERSONAL, "p2")))).toMatchObject({ version: 2n, name: "policyBundles/personal/versions/2" });
      const raced = await Promise.all(Array.from({ length: 5 }, (_, i) => made(store.putPolicyBundle(bundle(ProfileType.USER_OWNED_MODEL, `u${i}`)))));
      expect(raced.map((b) => b.version).sort()).toEqual([1n, 2n, 3n, 4n, 5n]);
      const newest = raced.find((b) => b.version === 5n)!;
      const listed = await store.listPolicyBundles();
      expect(listed.map((b) => [b.profileType, b.version, b.source])).toEqual([
        [ProfileType.PERSONAL, 2n, "p2"],
        [ProfileType.CORPORATE_FIREWALL, 1n, "c1"],
        [ProfileType.USER_OWNED_MODEL, 5n, newest.source],
      ]);
      expect(listed[0]).toMatchObject({ name: "policyBundles/personal/versions/2", digest: "p2", appliedBy: "test" });
      // A page: the profile types after a position, at most a limit.
      expect((await store.listPolicyBundles({ after: ProfileType.UNSPECIFIED, limit: 2 })).map((b) => b.profileType)).toEqual([
        ProfileType.PERSONAL,
        ProfileType.CORPORATE_FIREWALL,
      ]);
      expect((await store.listPolicyBundles({ after: ProfileType.CORPORATE_FIREWALL, limit: 2 })).map((b) => b.profileType)).toEqual([
        ProfileType.USER_OWNED_MODEL,
      ]);
      expect(await store.listPolicyBundles({ after: ProfileType.USER_OWNED_MODEL, limit: 2 })).toEqual([]);
    });

    it("keeps a profile's budget, and reports none for a profile created without one", async () => {
      const withBudget = { name: "profiles/budgeted", profileType: ProfileType.CORPORATE_FIREWALL, budget: budget({ modelCalls: 9n, tokens: 900n }) };
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: operation({ type: OperationType.PROFILE_CREATE, profile: withBudget.name }),
        requestDigest: "d",
        createsProfile: withBudget,
      });
      const stored = await store.getProfile(withBudget.name);
      expect(stored).toEqual(withBudget);
      const plain = { name: "profiles/plain", profileType: ProfileType.PERSONAL };
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: operation({ type: OperationType.PROFILE_CREATE, profile: plain.name }),
        requestDigest: "d",
        createsProfile: plain,
      });
      expect(await store.getProfile(plain.name)).toEqual(plain);
      expect("budget" in (await store.getProfile(plain.name))!).toBe(false);
    });

    it("keeps holdings, reservations, bundles, profiles and once keys across a reopen", async () => {
      const op = operation();
      await store.createOperation({
        idempotencyScope: SCOPE,
        operation: op,
        requestDigest: "d",
        createsProfile: { name: "profiles/kept", profileType: ProfileType.PERSONAL, budget: budget({ tokens: 5n }) },
        reservation: { accounts: ["profiles/kept"], amount: budget({ tokens: 3n }), check: () => undefined },
      });
      await store.modifyOperation(op.name, (current) => ({ operation: { ...current, attempt: 2 } }), "once");
      await store.putPolicyBundle(create(PolicyBundleSchema, { profileType: ProfileType.PERSONAL, source: "s" }));
      await store.close();
      store = await reopen();
      expect((await heldOf(store, "profiles/kept")).tokens).toBe(3n);
      expect((await store.getProfile("profiles/kept"))?.budget?.tokens).toBe(5n);
      expect(await store.modifyOperation(op.name, () => undefined, "once")).toMatchObject({ kind: "already-done", operation: { attempt: 2 } });
      expect((await made(store.putPolicyBundle(create(PolicyBundleSchema, { profileType: ProfileType.PERSONAL, source: "t" })))).version).toBe(2n);
      // The reservation's record is kept too: settling after the reopen gives it back.
      await store.modifyOperation(op.name, (current) => ({ operation: { ...current, state: TaskState.COMPLETED }, settle: { spent: budget({ tokens: 1n }) } }));
      expect((await heldOf(store, "profiles/kept")).tokens).toBe(1n);
    });

    it("keeps everything across a reopen, and creates a secret only once", async () => {
      const op = operation();
      await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d", event: event(op.name, EventType.START, TaskState.QUEUED) });
      const secret = await store.getOrCreateSecret("k", () => "first");
      expect(await store.getOrCreateSecret("k", () => "second")).toBe("first");
      await store.close();
      store = await reopen();
      expect((await store.getOperation(op.name))?.name).toBe(op.name);
      expect((await store.readEvents(0n, 10)).map((e) => e.event.operation)).toEqual([op.name]);
      expect(await store.getOrCreateSecret("k", () => "third")).toBe(secret);
    });

    it("keeps each runner's latest heartbeat, across a reopen", async () => {
      await store.heartbeat("runners/a", new Date(1_000));
      await store.heartbeat("runners/b", new Date(2_000));
      await store.heartbeat("runners/a", new Date(3_000));
      expect(await store.runnerHeartbeats()).toEqual(
        new Map([
          ["runners/a", new Date(3_000)],
          ["runners/b", new Date(2_000)],
        ]),
      );
      await store.close();
      store = await reopen();
      expect((await store.runnerHeartbeats()).get("runners/a")).toEqual(new Date(3_000));
    });

    it("appends an audited write's record in the write's commit, and none when the write is refused or changes nothing", async () => {
      const appended: bigint[] = [];
      store.onAuditAppend((sequence) => appended.push(sequence));
      expect(await store.auditHead()).toBeUndefined();
      // createOperation: only when created; an empty resource becomes the operation's name.
      const op = operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/au" });
      const createsProfile = { name: "profiles/au", profileType: ProfileType.PERSONAL };
      expect(await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d", createsProfile, audit: auditDraft() })).toMatchObject({
        kind: "created",
      });
      expect(
        await store.createOperation({ idempotencyScope: SCOPE, operation: operation({ requestId: op.requestId }), requestDigest: "d", audit: auditDraft() }),
      ).toMatchObject({ kind: "existing" });
      const again = operation({ type: OperationType.PROFILE_CREATE, profile: "profiles/au" });
      expect(
        await store.createOperation({ idempotencyScope: SCOPE, operation: again, requestDigest: "d2", createsProfile, audit: auditDraft() }),
      ).toMatchObject({ kind: "profile-exists" });
      const refusal = new Error("over budget");
      await expect(
        store.createOperation({
          idempotencyScope: SCOPE,
          operation: operation(),
          requestDigest: "d",
          reservation: { accounts: ["profiles/au"], amount: budget({ modelCalls: 1n }), check: () => refusal },
          audit: auditDraft(),
        }),
      ).rejects.toBe(refusal);
      // modifyOperation: only when modified.
      expect(await store.modifyOperation(op.name, () => undefined, undefined, auditDraft())).toMatchObject({ kind: "unchanged" });
      expect(await store.modifyOperation("operations/none", (current) => ({ operation: current }), undefined, auditDraft())).toEqual({ kind: "not-found" });
      const charge = (current: Operation) => ({ operation: { ...current, usage: budget({ tokens: 5n }) } });
      expect(
        await store.modifyOperation(op.name, charge, "ticket", auditDraft({ rpc: "/agentmachine.v1.RuntimeService/ReportUsage", resource: "explicit" })),
      ).toMatchObject({ kind: "modified" });
      expect(await store.modifyOperation(op.name, charge, "ticket", auditDraft())).toMatchObject({ kind: "already-done" });
      // Delegations: a refused child and a revocation that revokes nothing leave no record.
      await store.putDelegation(delegation("delegations/au"));
      await expect(store.putChildDelegation(delegation("delegations/au-no", "delegations/au"), () => refusal, auditDraft())).rejects.toBe(refusal);
      await store.putChildDelegation(
        delegation("delegations/au-1", "delegations/au"),
        () => undefined,
        auditDraft({ operationType: OperationType.UNSPECIFIED, commandRef: "IssueDelegation" }),
      );
      expect(await store.revokeDelegationSubtree("delegations/au-1", new Date(), "r", auditDraft({ commandRef: "RevokeDelegation" }))).toHaveLength(1);
      expect(await store.revokeDelegationSubtree("delegations/au-1", new Date(), "r", auditDraft({ commandRef: "RevokeDelegation" }))).toEqual([]);
      const bundle = await made(
        store.putPolicyBundle(
          create(PolicyBundleSchema, { profileType: ProfileType.PERSONAL, source: "s", digest: "s" }),
          auditDraft({ commandRef: "ApplyPolicyBundle" }),
        ),
      );
      // A denied attempt, which has no other effect.
      const denied = await store.appendAudit(auditDraft({ decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED, reason: "no" } }));
      expect(denied.sequence).toBe(6n);

      const records = await store.listAuditRecords({ afterSequence: 0n, limit: 100 });
      expect(records.map((r) => r.resource)).toEqual([op.name, "explicit", "delegations/au-1", "delegations/au-1", bundle.name, ""]);
      expect(records.map((r) => r.commandRef)).toEqual([
        "urn:srcos:workspace-operation-command:tool-grant-apply",
        "urn:srcos:workspace-operation-command:tool-grant-apply",
        "IssueDelegation",
        "RevokeDelegation",
        "ApplyPolicyBundle",
        "urn:srcos:workspace-operation-command:tool-grant-apply",
      ]);
      expectWholeChain(records);
      expect(records[5]).toEqual(denied);
      expect(records[0]).toMatchObject({ principal: "alice", delegationChain: ["delegations/root", "delegations/a"], decision: { allowed: true } });
      expect(records[0]!.time).toBeDefined();
      expect(await store.auditHead()).toEqual({ sequence: 6n, hash: denied.hash });
      expect(appended).toEqual([1n, 2n, 3n, 4n, 5n, 6n]);
    });

    it("lists audit records by principal, delegation, operation type, decision, time and sequence range, in sequence order", async () => {
      const at = (ms: number) => timestampFromDate(new Date(ms));
      await store.appendAudit(auditDraft({ time: at(1_000), principal: "alice", delegation: "delegations/a", operationType: OperationType.EXECUTION_START }));
      await store.appendAudit(
        auditDraft({ time: at(2_000), principal: "bob", delegation: "delegations/b", decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED } }),
      );
      await store.appendAudit(auditDraft({ time: at(3_000), principal: "alice", delegation: "delegations/a2", operationType: OperationType.CONTAINER_RUN }));
      await store.appendAudit(
        auditDraft({ time: at(4_000), principal: "alice", delegation: "delegations/a", decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED } }),
      );
      const sequences = async (query: Partial<AuditQuery>) =>
        (await store.listAuditRecords({ afterSequence: 0n, limit: 100, ...query })).map((r) => Number(r.sequence));
      expect(await sequences({})).toEqual([1, 2, 3, 4]);
      expect(await sequences({ principal: "alice" })).toEqual([1, 3, 4]);
      expect(await sequences({ delegation: "delegations/a" })).toEqual([1, 4]);
      expect(await sequences({ operationTypes: [OperationType.EXECUTION_START, OperationType.CONTAINER_RUN] })).toEqual([1, 3]);
      expect(await sequences({ allowed: true })).toEqual([1, 3]);
      expect(await sequences({ allowed: false, principal: "alice" })).toEqual([4]);
      expect(await sequences({ startTime: new Date(2_000), endTime: new Date(4_000) })).toEqual([2, 3]);
      expect(await sequences({ afterSequence: 1n, limit: 2 })).toEqual([2, 3]);
      expect(await sequences({ principal: "nobody" })).toEqual([]);
      // A page of a tail: no further than its end, whatever the limit.
      expect(await sequences({ principal: "alice", throughSequence: 3n })).toEqual([1, 3]);
      expect(await sequences({ afterSequence: 1n, throughSequence: 2n })).toEqual([2]);
    });

    it("keeps one audit chain when appends race", async () => {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          i % 2 === 0
            ? store.appendAudit(auditDraft())
            : store.createOperation({ idempotencyScope: SCOPE, operation: operation(), requestDigest: "d", audit: auditDraft() }),
        ),
      );
      const records = await store.listAuditRecords({ afterSequence: 0n, limit: 100 });
      expect(records).toHaveLength(40);
      expectWholeChain(records);
    });

    it("stores signed checkpoints once per size, lists them oldest first, and keeps them and the log across a reopen", async () => {
      const checkpoint = (size: bigint, note = `note ${size}`) =>
        create(AuditCheckpointSchema, { origin: "o", size, headHash: "cd".repeat(32), signedNote: note, time: timestampFromDate(new Date(5_000)) });
      expect(await store.latestAuditCheckpoint()).toBeUndefined();
      await store.putAuditCheckpoint(checkpoint(2n));
      await store.putAuditCheckpoint(checkpoint(5n));
      await store.putAuditCheckpoint(checkpoint(2n, "another note of size 2"));
      await store.putAuditCheckpoint(checkpoint(9n));
      expect(await store.listAuditCheckpoints(0n, 10)).toEqual([checkpoint(2n), checkpoint(5n), checkpoint(9n)]);
      expect((await store.listAuditCheckpoints(2n, 1)).map((c) => c.size)).toEqual([5n]);
      expect(await store.latestAuditCheckpoint()).toEqual(checkpoint(9n));
      const record = await store.appendAudit(auditDraft());
      await store.close();
      store = await reopen();
      expect(await store.latestAuditCheckpoint()).toEqual(checkpoint(9n));
      expect(await store.listAuditRecords({ afterSequence: 0n, limit: 10 })).toEqual([record]);
      expect((await store.appendAudit(auditDraft())).previousHash).toBe(record.hash);
    });

    it("prunes the records a stored checkpoint covers in one commit with the prune's own record, refuses any other cut, and keeps the chain going", async () => {
      const checkpointOf = (record: AuditRecord) =>
        create(AuditCheckpointSchema, {
          origin: "o",
          size: record.sequence,
          headHash: record.hash,
          signedNote: `note ${record.sequence}`,
          time: timestampFromDate(new Date(5_000)),
        });
      const pruneDraft = () =>
        auditDraft({ rpc: "/agentmachine.v1.AuditService/PruneAuditLog", operationType: OperationType.UNSPECIFIED, commandRef: "PruneAuditLog" });
      const all = async () => store.listAuditRecords({ afterSequence: 0n, limit: 100 });
      const sizes = async () => (await store.listAuditCheckpoints(0n, 100)).map((c) => c.size);
      const written: AuditRecord[] = [];
      for (let i = 0; i < 5; i += 1) written.push(await store.appendAudit(auditDraft()));
      const [r2, r3, r4, r5] = written.slice(1) as [AuditRecord, AuditRecord, AuditRecord, AuditRecord];
      for (const record of [r2, r3, r5]) await store.putAuditCheckpoint(checkpointOf(record));
      const appended: bigint[] = [];
      store.onAuditAppend((sequence) => appended.push(sequence));

      // Refused, changing nothing: no checkpoint of that size, or one stating another head.
      expect(await store.pruneAuditLog(4n, r4.hash, pruneDraft())).toEqual({ kind: "no-checkpoint" });
      expect(await store.pruneAuditLog(3n, r2.hash, pruneDraft())).toEqual({ kind: "head-mismatch", checkpoint: checkpointOf(r3) });
      expect(await all()).toEqual(written);

      expect(await store.pruneAuditLog(3n, r3.hash, pruneDraft())).toEqual({ kind: "pruned", records: 3n, checkpoint: checkpointOf(r3) });
      const [prune] = (await all()).slice(2);
      expect(prune).toMatchObject({ sequence: 6n, previousHash: r5.hash, resource: "auditCheckpoints/3", commandRef: "PruneAuditLog" });
      expect(await all()).toEqual([r4, r5, prune]);
      expect(await sizes()).toEqual([3n, 5n]);
      expect(await store.auditHead()).toEqual({ sequence: 6n, hash: prune!.hash });
      expect(appended).toEqual([6n]);

      // Again: nothing left to delete, nothing recorded.
      expect(await store.pruneAuditLog(3n, r3.hash, pruneDraft())).toEqual({ kind: "pruned", records: 0n, checkpoint: checkpointOf(r3) });
      expect(await store.auditHead()).toEqual({ sequence: 6n, hash: prune!.hash });

      // Up to the head: the prune's record is sealed onto the last record deleted.
      const r7 = await store.appendAudit(auditDraft());
      await store.putAuditCheckpoint(checkpointOf(r7));
      expect(await store.pruneAuditLog(7n, r7.hash, pruneDraft())).toMatchObject({ kind: "pruned", records: 4n });
      const [last] = await all();
      expect(last).toMatchObject({ sequence: 8n, previousHash: r7.hash, resource: "auditCheckpoints/7" });
      expect(await sizes()).toEqual([7n]);

      // A checkpoint the stored record does not match (the log was changed since it was signed).
      await store.putAuditCheckpoint(checkpointOf({ ...last!, hash: "ee".repeat(32) }));
      expect(await store.pruneAuditLog(8n, "ee".repeat(32), pruneDraft())).toMatchObject({ kind: "log-mismatch" });
      expect(await all()).toEqual([last]);

      await store.close();
      store = await reopen();
      expect((await store.appendAudit(auditDraft())).sequence).toBe(9n);
    });

    describe("history pages", () => {
      const PROFILES = ["profiles/hp-a", "profiles/hp-b", "profiles/hp-c"];
      const OP_TYPES = [OperationType.TOOL_GRANT_APPLY, OperationType.EXECUTION_START];

      /** Operations over the profiles and types, each with a run of events; every stored event, in order. */
      async function history(operations: number): Promise<StoredEvent[]> {
        for (let i = 0; i < operations; i += 1) {
          const op = operation({ profile: PROFILES[i % PROFILES.length]!, type: OP_TYPES[i % OP_TYPES.length]! });
          await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
          for (const [type, state] of EVENT_STEPS.slice(0, 1 + (i % EVENT_STEPS.length))) {
            const result = await store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: event(op.name, type, state) });
            expect(result.kind).toBe("updated");
          }
        }
        return store.readEvents(0n, 10_000);
      }

      /** The selection's rule, as the reference the store's query must equal. */
      function selects(selection: EventSelection, stored: StoredEvent): boolean {
        const { event: e } = stored;
        return (
          (selection.profiles?.includes(stored.profile) ?? true) &&
          (selection.operations?.includes(e.operation) ?? true) &&
          (selection.operationTypes?.includes(stored.operationType) ?? true) &&
          (selection.types?.includes(e.type) ?? true) &&
          (selection.states?.includes(e.state) ?? true)
        );
      }

      /** Every page from `after` to `latest`, each `span` sequences wide at most, concatenated. */
      async function pagedThrough(selection: EventSelection, after: bigint, latest: bigint, span: bigint, limit: number): Promise<StoredEvent[]> {
        const read: StoredEvent[] = [];
        for (let cursor = after; cursor < latest; ) {
          const through = cursor + span < latest ? cursor + span : latest;
          const page = await store.readEventPage({ ...selection, after: cursor, through, limit });
          expect(page.events.length).toBeLessThanOrEqual(limit);
          read.push(...asRead(page.events));
          cursor = page.events.length === limit ? page.events[limit - 1]!.event.sequence : through;
        }
        return read;
      }

      it("selects in the query exactly the events the filter matches, in order, page by page, whatever the page bounds", async () => {
        const all = await history(12);
        const names = [...new Set(all.map((stored) => stored.event.operation))];
        const { latest } = await store.eventBounds();
        const subset = <T>(values: readonly T[]) => fc.option(fc.subarray([...values]), { nil: undefined });
        const selection = fc.record({
          profiles: subset([...PROFILES, "profiles/hp-none"]),
          operations: subset(names),
          operationTypes: subset(OP_TYPES),
          types: subset([EventType.START, EventType.PROGRESS, EventType.COMPLETE]),
          states: subset([TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED]),
        });
        await fc.assert(
          fc.asyncProperty(
            selection,
            fc.nat({ max: Number(latest) }),
            fc.integer({ min: 1, max: 40 }),
            fc.integer({ min: 1, max: 7 }),
            async (chosen, from, span, limit) => {
              const defined = Object.fromEntries(Object.entries(chosen).filter(([, value]) => value !== undefined)) as EventSelection;
              const expected = all.filter((stored) => stored.event.sequence > BigInt(from) && selects(defined, stored));
              expect(await pagedThrough(defined, BigInt(from), latest, BigInt(span), limit)).toEqual(expected);
            },
          ),
          { numRuns: 40 },
        );
      });

      it("reads a page's oldest retained sequence with it, so a reader knows when compaction overtook it", async () => {
        const all = await history(3);
        const { latest } = await store.eventBounds();
        expect((await store.readEventPage({ after: 0n, through: latest, limit: 100 })).oldest).toBe(all[0]!.event.sequence);
        await store.compactEvents({ maxEvents: 2, maxAgeMs: 60_000 }, new Date());
        const page = await store.readEventPage({ after: 0n, through: latest, limit: 100 });
        expect({ ...page, events: asRead(page.events) }).toEqual({ events: all.slice(-2), oldest: latest - 1n });
        expect(await store.readEventPage({ profiles: [], after: 0n, through: latest, limit: 100 })).toEqual({ events: [], oldest: latest - 1n });
      });
    });

    describe("execution output", () => {
      const bytes = (text: string) => new TextEncoder().encode(text);
      const text = (read: { chunks: { data: Uint8Array }[] }) => Buffer.concat(read.chunks.map((chunk) => chunk.data)).toString("utf8");
      const key = (stream: "stdout" | "stderr" = "stdout", attempt = 1) => ({ operation: "operations/OUT1", attempt, stream });
      const append = (offset: bigint, data: string, extra: { end?: { truncated: boolean }; time?: Date; stream?: "stdout" | "stderr" } = {}) =>
        store.appendOutput({ ...key(extra.stream), offset, data: bytes(data), time: extra.time ?? new Date(), ...(extra.end ? { end: extra.end } : {}) });

      it("appends at the end only: a retried append stores only what it adds, a gap or bytes after the end are refused", async () => {
        const heard: unknown[] = [];
        store.onOutput((k) => heard.push(k));
        expect(await append(0n, "")).toEqual({ kind: "stored", size: 0n });
        expect(await append(0n, "hello ")).toEqual({ kind: "stored", size: 6n });
        expect(await append(0n, "hello ")).toEqual({ kind: "stored", size: 6n }); // a retry: nothing new
        expect(await append(3n, "lo world")).toEqual({ kind: "stored", size: 11n }); // overlaps: only "world" is new
        expect(await append(20n, "late")).toEqual({ kind: "gap", size: 11n });
        expect(await append(11n, "!\n", { stream: "stderr" })).toEqual({ kind: "gap", size: 0n });
        expect(await append(11n, "", { end: { truncated: true } })).toEqual({ kind: "stored", size: 11n });
        expect(await append(11n, "more")).toEqual({ kind: "ended", size: 11n });
        expect(await append(6n, "world")).toEqual({ kind: "stored", size: 11n }); // a retry of stored bytes is still fine
        expect(heard).toEqual([key(), key(), key(), key()]);

        const whole = await store.readOutput(key(), 0n, 100);
        expect(text(whole)).toBe("hello world");
        expect(whole.state).toEqual({ size: 11n, ended: true, truncated: true });
        // From inside a chunk: cut to start there.
        const tail = await store.readOutput(key(), 8n, 100);
        expect(tail.chunks[0]!.offset).toBe(8n);
        expect(text(tail)).toBe("rld");
        expect((await store.readOutput(key(), 11n, 100)).chunks).toEqual([]);
        // Paged by chunk count, in order.
        const first = await store.readOutput(key(), 0n, 1);
        expect(first.chunks).toHaveLength(1);
        expect(text(first)).toBe("hello ");
        // Streams and attempts are apart; one never written has no state.
        expect(await store.readOutput(key("stderr"), 0n, 100)).toEqual({ chunks: [] });
        expect(await store.readOutput(key("stdout", 2), 0n, 100)).toEqual({ chunks: [] });
      });

      it("keeps output across a reopen and removes streams last appended to before the retention cutoff", async () => {
        const old = new Date(Date.now() - 3_600_000);
        await append(0n, "old", { time: old, end: { truncated: false } });
        await append(0n, "new", { stream: "stderr" });
        await store.close();
        store = await reopen();
        expect(text(await store.readOutput(key(), 0n, 100))).toBe("old");
        expect(await store.compactOutput(new Date(Date.now() - 60_000))).toBe(1);
        expect(await store.readOutput(key(), 0n, 100)).toEqual({ chunks: [] });
        expect(text(await store.readOutput(key("stderr"), 0n, 100))).toBe("new");
      });

      it("concurrent appends of one stream at one offset store the bytes once", async () => {
        const results = await Promise.all(Array.from({ length: 8 }, () => append(0n, "once")));
        expect(results.every((result) => result.kind === "stored" && result.size === 4n)).toBe(true);
        expect(text(await store.readOutput(key(), 0n, 100))).toBe("once");
      });
    });
  });
}
