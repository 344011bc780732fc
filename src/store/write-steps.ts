// The writes both stores make, each written once as steps (steps.ts) over the rows of one
// transaction (`WriteRows`, which each backend implements in its dialect, taking its row locks
// where it reads; SQLite, the only writer of its file, needs none). The order of the steps is
// the order of the statements in both stores; for PostgreSQL it is also the order of its locks
// (see postgres-store.ts): the operation row, then the budget accounts, then the event counter,
// then the audit head.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { AuditDraft } from "../model/audit-chain.js";
import { McpUpstreamSchema, type McpUpstream } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import type { PolicyBundle } from "../gen/agentmachine/v1/policy_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import type { AuditCheckpoint } from "../gen/agentmachine/v1/audit_pb.js";
import { prunedTo } from "../model/audit-retention.js";
import { checkpointFromRow, pruneOutcome, type CheckpointRow } from "./audit-rows.js";
import { planOutputAppend, type OutputPlan } from "./output-rows.js";
import { numberBundle } from "./request-keys.js";
import type { OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { reservedHoldings, settledHoldings } from "./budget-rows.js";
import { revocations } from "./delegation-rows.js";
import { existingOperation, modification, profileRowValues, withEvent } from "./operation-rows.js";
import { decodeOperation } from "./stored-messages.js";
import { step, type Maybe, type Steps } from "./steps.js";
import type {
  AccountState,
  AuditPruneResult,
  ChildAccount,
  KeyedCreate,
  OutputAppend,
  OutputKey,
  OutputState,
  RequestKey,
  ClaimResult,
  CreateResult,
  Modification,
  ModifyResult,
  NewOperation,
  OperationUpdate,
  Reservation,
  Settlement,
  SlotKey,
  StoredEvent,
  UpdateResult,
} from "./store.js";

/** The statements of one write transaction that the shared steps need, in a backend's dialect. */
export type WriteRows = OperationRows & DelegationRows & BundleRows & McpUpstreamRows & AuditRows & OutputRows;

export interface OperationRows {
  byRequestId(scope: string, requestId: string): Maybe<{ request_digest: string; data: Uint8Array } | undefined>;
  /** Inserts a profile unless one has its name; whether it did. */
  insertProfile(values: ReturnType<typeof profileRowValues>): Maybe<boolean>;
  /** The accounts' states (with `children`, their child delegations too), locked until the commit. */
  lockAccounts(accounts: readonly string[], children: boolean): Maybe<Map<string, AccountState>>;
  putHeld(held: Map<string, Budget>): Maybe<unknown>;
  insertReservation(operation: string, accounts: readonly string[], amount: Budget): Maybe<unknown>;
  /** Deletes an operation's reservation and returns it; undefined when it holds none. */
  takeReservation(operation: string): Maybe<{ accounts: readonly string[]; amount: Budget } | undefined>;
  appendEvent(operation: Operation, event: OperationEvent): Maybe<StoredEvent>;
  insertOperation(input: NewOperation, operation: Operation): Maybe<unknown>;
  /** The operation's row, locked until the commit. */
  lockOperation(name: string): Maybe<{ state: number | bigint; data: Uint8Array } | undefined>;
  writeOperation(operation: Operation): Maybe<unknown>;
  /** Records a once key; false when it was recorded already. */
  recordOnceKey(key: string): Maybe<boolean>;
  /** Before a claim counts its slots: serializes the claims under these keys until the commit. */
  lockClaim(name: string, keys: readonly string[]): Maybe<unknown>;
  /** Running operations whose reservation is held on `key`. */
  runningUnder(key: string): Maybe<bigint>;
  appendAudit(draft: AuditDraft, actedOn: string): Maybe<unknown>;
}

export interface DelegationRows {
  /** `name`'s subtree (subtreeSql's rows, parents first), locked until the commit. */
  lockSubtree(name: string): Maybe<{ id: string; revoked: boolean | bigint; data: Uint8Array }[]>;
  writeRevoked(id: string, delegation: Delegation): Maybe<unknown>;
  /** A delegation account's state with its children, locked (with the delegation's row) until the commit. */
  lockParent(parent: string): Maybe<AccountState>;
  /** Inserts a delegation unless one has its name. */
  insertDelegation(delegation: Delegation): Maybe<unknown>;
  /** Records `key` as naming `resource`; the answer for it instead when it is recorded already. */
  takeKey(key: RequestKey, resource: string): Maybe<KeyedCreate<never> | undefined>;
  appendAudit(draft: AuditDraft, actedOn: string): Maybe<unknown>;
}

export interface BundleRows {
  /** Serializes the numbering of the profile type's bundles until the commit. */
  lockBundleVersions(profileType: ProfileType): Maybe<unknown>;
  /** The newest version of the profile type's bundles; null or undefined when none. */
  latestBundleVersion(profileType: ProfileType): Maybe<bigint | null | undefined>;
  insertBundle(bundle: PolicyBundle): Maybe<unknown>;
  takeKey(key: RequestKey, resource: string): Maybe<KeyedCreate<never> | undefined>;
  appendAudit(draft: AuditDraft, actedOn: string): Maybe<unknown>;
}

export interface McpUpstreamRows {
  /** Serializes the changes of the declared upstreams until the commit. */
  lockMcpUpstreams(): Maybe<unknown>;
  getMcpUpstream(name: string): Maybe<Uint8Array | undefined>;
  putMcpUpstream(name: string, data: Uint8Array): Maybe<unknown>;
  deleteMcpUpstream(name: string): Maybe<unknown>;
  /** Moves the version readers re-read the declarations by. */
  bumpMcpUpstreamsVersion(): Maybe<unknown>;
  appendAudit(draft: AuditDraft, actedOn: string): Maybe<unknown>;
}

export interface AuditRows {
  /** Holds off appends and other prunes until the commit. */
  lockAuditHead(): Maybe<unknown>;
  checkpointOfSize(size: bigint): Maybe<CheckpointRow | undefined>;
  /** The smallest sequence in the log; null when it is empty. */
  firstAudit(): Maybe<bigint | number | null>;
  auditHashAt(sequence: bigint): Maybe<string | undefined>;
  /** Deletes the records up to `size` and the checkpoints smaller; how many records. */
  deleteAuditUpTo(size: bigint): Maybe<number>;
  appendAudit(draft: AuditDraft, actedOn: string): Maybe<unknown>;
}

export interface OutputRows {
  /** The stream's state, locked until the commit. */
  lockOutputState(key: OutputKey): Maybe<OutputState | undefined>;
  insertOutputChunk(key: OutputKey, offset: bigint, data: Uint8Array): Maybe<unknown>;
  /** Writes the stream's state (`existed`: whether it had a row). */
  writeOutputState(key: OutputKey, existed: boolean, state: OutputState, timeMs: number): Maybe<unknown>;
}

export function* createOperationSteps(rows: WriteRows, input: NewOperation, operation: Operation): Steps<CreateResult> {
  const existing = yield* step(rows.byRequestId(input.idempotencyScope, operation.requestId));
  if (existing !== undefined) return existingOperation(existing, input.requestDigest);
  if (input.createsProfile !== undefined && !(yield* step(rows.insertProfile(profileRowValues(input.createsProfile, operation.name))))) {
    return { kind: "profile-exists", profile: input.createsProfile.name };
  }
  if (input.reservation !== undefined) yield* reserveSteps(rows, operation.name, input.reservation);
  const event = input.event ? yield* step(rows.appendEvent(operation, input.event)) : undefined;
  yield* step(rows.insertOperation(input, operation));
  if (input.audit !== undefined) yield* step(rows.appendAudit(input.audit, operation.name));
  return withEvent("created", operation, event);
}

/** Checks a reservation over its accounts' current state (a refusal is thrown), holds it on each, and records it for its settlement. */
function* reserveSteps(rows: WriteRows, operation: string, { accounts, amount, check }: Reservation): Steps<void> {
  const states = yield* step(rows.lockAccounts(accounts, true));
  const refusal = check(accounts.map((account) => states.get(account)!));
  if (refusal !== undefined) throw refusal;
  yield* step(rows.putHeld(reservedHoldings((account) => states.get(account)!.held, accounts, amount)));
  yield* step(rows.insertReservation(operation, accounts, amount));
}

/** Gives back an operation's reservation on each of its accounts and keeps what it spent, up to the reservation; nothing if it holds none. */
function* settleSteps(rows: WriteRows, operation: string, { spent }: Settlement): Steps<void> {
  const reservation = yield* step(rows.takeReservation(operation));
  if (reservation === undefined) return;
  const { accounts, amount } = reservation;
  const states = yield* step(rows.lockAccounts(accounts, false));
  yield* step(rows.putHeld(settledHoldings((account) => states.get(account)!.held, accounts, amount, spent)));
}

/** Writes `operation`'s new form: its settlement first, then its event, then its row. */
function* writeSteps(rows: WriteRows, operation: Operation, event: OperationEvent | undefined, settle: Settlement | undefined): Steps<StoredEvent | undefined> {
  if (settle !== undefined) yield* settleSteps(rows, operation.name, settle);
  const stored = event ? yield* step(rows.appendEvent(operation, event)) : undefined;
  yield* step(rows.writeOperation(operation));
  return stored;
}

export function* updateOperationSteps(rows: WriteRows, update: OperationUpdate, operation: Operation): Steps<UpdateResult> {
  const row = yield* step(rows.lockOperation(operation.name));
  if (row === undefined) return { kind: "not-found" };
  if (Number(row.state) !== update.expectedState) return { kind: "state-changed", operation: decodeOperation(row.data) };
  return withEvent("updated", operation, yield* writeSteps(rows, operation, update.event, update.settle));
}

export function* modifyOperationSteps(rows: WriteRows, name: string, modify: Modification, onceKey?: string, audit?: AuditDraft): Steps<ModifyResult> {
  const row = yield* step(rows.lockOperation(name));
  if (row === undefined) return { kind: "not-found" };
  const current = decodeOperation(row.data);
  if (onceKey !== undefined && !(yield* step(rows.recordOnceKey(onceKey)))) return { kind: "already-done", operation: current };
  const change = modification(current, modify);
  if (change === undefined) return { kind: "unchanged", operation: current };
  const event = yield* writeSteps(rows, change.operation, change.event, change.settle);
  if (audit !== undefined) yield* step(rows.appendAudit(audit, name));
  return withEvent("modified", change.operation, event);
}

export function* claimOperationSteps(rows: WriteRows, name: string, slots: readonly SlotKey[], modify: Modification): Steps<ClaimResult> {
  yield* step(
    rows.lockClaim(
      name,
      slots.map((slot) => slot.key),
    ),
  );
  for (const { key, cap } of slots) {
    if ((yield* step(rows.runningUnder(key))) >= cap) return { kind: "no-slot", key };
  }
  return yield* modifyOperationSteps(rows, name, modify);
}

export function* revokeSubtreeSteps(rows: WriteRows, name: string, time: Date, reason: string, audit?: AuditDraft): Steps<Delegation[]> {
  const revoked = revocations(yield* step(rows.lockSubtree(name)), time, reason);
  for (const { id, delegation } of revoked) yield* step(rows.writeRevoked(id, delegation));
  if (audit !== undefined && revoked.length > 0) yield* step(rows.appendAudit(audit, name));
  return revoked.map(({ delegation }) => delegation);
}

export function* putChildDelegationSteps(
  rows: DelegationRows,
  child: Delegation,
  check: (siblings: ChildAccount[], parentHeld: Budget) => Error | undefined,
  audit?: AuditDraft,
  key?: RequestKey,
): Steps<KeyedCreate<Delegation>> {
  const taken = key && (yield* step(rows.takeKey(key, child.name)));
  if (taken) return taken;
  const parent = yield* step(rows.lockParent(child.parent));
  const refusal = check(parent.children, parent.held);
  if (refusal !== undefined) throw refusal;
  yield* step(rows.insertDelegation(child));
  if (audit !== undefined) yield* step(rows.appendAudit(audit, child.name));
  return { kind: "created", value: child };
}

/** Numbers `bundle` as its profile type's next version and stores it. */
export function* putPolicyBundleSteps(rows: BundleRows, bundle: PolicyBundle, audit?: AuditDraft, key?: RequestKey): Steps<KeyedCreate<PolicyBundle>> {
  yield* step(rows.lockBundleVersions(bundle.profileType));
  numberBundle(bundle, yield* step(rows.latestBundleVersion(bundle.profileType)));
  const taken = key && (yield* step(rows.takeKey(key, bundle.name)));
  if (taken) return taken;
  yield* step(rows.insertBundle(bundle));
  if (audit !== undefined) yield* step(rows.appendAudit(audit, bundle.name));
  return { kind: "created", value: bundle };
}

/** What an MCP upstream's audit record names (as the egress proxy's records of its connections do). */
export const mcpUpstreamResource = (name: string): string => `mcp-upstreams/${name}`;

/** Stores `upstream`, new or replacing the one of its name, and moves the version. */
export function* putMcpUpstreamSteps(rows: McpUpstreamRows, upstream: McpUpstream, audit?: AuditDraft): Steps<{ created: boolean }> {
  yield* step(rows.lockMcpUpstreams());
  const existing = yield* step(rows.getMcpUpstream(upstream.name));
  yield* step(rows.putMcpUpstream(upstream.name, toBinary(McpUpstreamSchema, upstream)));
  yield* step(rows.bumpMcpUpstreamsVersion());
  if (audit !== undefined) yield* step(rows.appendAudit(audit, mcpUpstreamResource(upstream.name)));
  return { created: existing === undefined };
}

/** Deletes the upstream `name` and moves the version; nothing when there is none. */
export function* deleteMcpUpstreamSteps(rows: McpUpstreamRows, name: string, audit?: AuditDraft): Steps<McpUpstream | undefined> {
  yield* step(rows.lockMcpUpstreams());
  const existing = yield* step(rows.getMcpUpstream(name));
  if (existing === undefined) return undefined;
  yield* step(rows.deleteMcpUpstream(name));
  yield* step(rows.bumpMcpUpstreamsVersion());
  if (audit !== undefined) yield* step(rows.appendAudit(audit, mcpUpstreamResource(name)));
  return fromBinary(McpUpstreamSchema, existing);
}

export function* pruneAuditLogSteps(rows: AuditRows, size: bigint, headHash: string, audit?: AuditDraft): Steps<AuditPruneResult> {
  yield* step(rows.lockAuditHead());
  const row = yield* step(rows.checkpointOfSize(size));
  const checkpoint: AuditCheckpoint | undefined = row && checkpointFromRow(row);
  const first = yield* step(rows.firstAudit());
  const signed = yield* step(rows.auditHashAt(size));
  const refused = pruneOutcome(checkpoint, headHash, first !== null && BigInt(first) <= size, signed);
  if (refused !== undefined) return refused;
  // The prune's record first: it seals onto the head, which may be the last record deleted.
  if (audit !== undefined) yield* step(rows.appendAudit(audit, prunedTo(size)));
  const records = yield* step(rows.deleteAuditUpTo(size));
  return { kind: "pruned", records: BigInt(records), checkpoint: checkpoint! };
}

/** Appends to an output stream as planOutputAppend decides; returns the plan. */
export function* appendOutputSteps(rows: OutputRows, append: OutputAppend): Steps<OutputPlan> {
  const key: OutputKey = { operation: append.operation, attempt: append.attempt, stream: append.stream };
  const stored = yield* step(rows.lockOutputState(key));
  const planned = planOutputAppend(stored, append);
  if (planned.kind !== "write") return planned;
  // The stream's row before its chunk: of two first appends at once (on PostgreSQL), the second
  // waits on the row's key and is retried, rather than failing on the chunk's.
  yield* step(rows.writeOutputState(key, stored !== undefined, planned.state, append.time.getTime()));
  if (planned.data.length > 0) yield* step(rows.insertOutputChunk(key, planned.offset, planned.data));
  return planned;
}
