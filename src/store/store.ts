// The operation store: the only durable state of the server. One async interface, so that the
// embedded SQLite store and a PostgreSQL store can stand behind it and pass one conformance
// suite (test/store/conformance.ts). Nothing outside src/store knows SQL.
import type { AuditDraft, ChainHead } from "../model/audit-chain.js";
import type { AuditCheckpoint, AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import type { OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { McpUpstream } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import type { PolicyBundle } from "../gen/agentmachine/v1/policy_pb.js";
import type { EventType, OperationType, ProfileType, TaskState } from "../gen/agentmachine/v1/types_pb.js";

/** An event as stored: the event plus what filters need to know of its operation. */
export interface StoredEvent {
  event: OperationEvent;
  profile: string;
  operationType: OperationType;
  labels: Readonly<Record<string, string>>;
}

export interface StoredProfile {
  name: string;
  profileType: ProfileType;
  /** What everything in the profile may spend together; undefined when only delegations limit it. */
  budget?: Budget;
}

/**
 * Budget accounts: a delegation (`delegations/{id}`) or a profile (`profiles/{id}`). An
 * account's `held` amount is what the operations under it (for a delegation: in its whole
 * subtree) have reserved and not yet settled, plus what finished ones spent.
 */
export interface AccountState {
  account: string;
  held: Budget;
  /** For a delegation account: its child delegations (whose budgets are carved out of it), with what each holds. */
  children: ChildAccount[];
}

export interface ChildAccount {
  delegation: Delegation;
  held: Budget;
}

export interface Reservation {
  /** Every account the amount is held against: the delegation chain and the profile. */
  accounts: readonly string[];
  amount: Budget;
  /** Run in the commit, over the accounts' current state (in `accounts` order); an error refuses the write. */
  check: (accounts: readonly AccountState[]) => Error | undefined;
}

/**
 * Ends an operation's reservation (the store knows its accounts and amount): the reservation is
 * given back and `spent` kept, but no more of it than was reserved in each dimension.
 */
export interface Settlement {
  spent: Budget;
}

/**
 * The idempotency scope of rows stored before request ids were scoped (given them by the
 * migration that added scopes); src/lifecycle/idempotency.ts says which keys they answer.
 */
export const LEGACY_IDEMPOTENCY_SCOPE = "legacy";

export interface NewOperation {
  operation: Operation;
  /** The scope its request id is unique in (src/lifecycle/idempotency.ts). */
  idempotencyScope: string;
  /** SHA-256 of the canonical request body, to tell a retried submit from a conflicting one. */
  requestDigest: string;
  /** For profile.create: the profile the operation creates, registered in the same commit. */
  createsProfile?: { name: string; profileType: ProfileType; budget?: Budget };
  /** Budget held for the operation, checked and taken in the same commit. */
  reservation?: Reservation;
  /** The first event (usually none: the task starts queued without one). */
  event?: OperationEvent;
  /** The command's audit record, appended in the same commit when the operation is created (see "Audited writes" below). */
  audit?: AuditDraft;
}

/**
 * The idempotency key of a create that is not an operation (IssueDelegation, ApplyPolicyBundle:
 * src/lifecycle/idempotency.ts), recorded in the create's commit.
 */
export interface RequestKey {
  /** The scope the key is unique in: the caller's delegation. */
  scope: string;
  /** The RPC: keys of two RPCs never meet. */
  rpc: string;
  requestId: string;
  /** SHA-256 of the canonical request body, to tell a retried create from a conflicting one. */
  requestDigest: string;
}

/**
 * What a create under a RequestKey did. A key already recorded makes it write nothing (no check,
 * no budget carved, no audit record) and names what the key's first create made.
 */
export type KeyedCreate<T> =
  | { kind: "created"; value: T }
  /** The key was recorded with the same request digest. */
  | { kind: "existing"; name: string }
  /** The key was recorded with another request digest. */
  | { kind: "request-id-conflict"; name: string };

export type CreateResult =
  | { kind: "created"; operation: Operation; event?: StoredEvent }
  | { kind: "existing"; operation: Operation }
  | { kind: "request-id-conflict"; operation: Operation }
  | { kind: "profile-exists"; profile: string };

export interface OperationUpdate {
  /** The operation's new stored form (state, attempt, artifact, usage, times…). */
  operation: Operation;
  /** The update applies only if the stored state is still this one. */
  expectedState: TaskState;
  /** The event recording the change; the store assigns its sequence. */
  event?: OperationEvent;
  /** When the operation ends: its reservation is settled in the same commit. */
  settle?: Settlement;
}

/** A read-modify-write of one operation in one commit: the new form and its event, or no change. */
export type Modification = (current: Operation) => { operation: Operation; event?: OperationEvent; settle?: Settlement } | undefined;

/** A cap on running executions: at most `cap` may run under `key` (a delegation or a profile) at once. */
export interface SlotKey {
  key: string;
  cap: bigint;
}

export type ModifyResult =
  | { kind: "modified"; operation: Operation; event?: StoredEvent }
  | { kind: "unchanged"; operation: Operation }
  | { kind: "already-done"; operation: Operation }
  | { kind: "not-found" };

export type ClaimResult = ModifyResult | { kind: "no-slot"; key: string };

export type UpdateResult =
  | { kind: "updated"; operation: Operation; event?: StoredEvent }
  | { kind: "state-changed"; operation: Operation }
  | { kind: "not-found" };

export interface OperationQuery {
  types?: readonly OperationType[];
  states?: readonly TaskState[];
  profile?: string;
  /** Only operations in one of these profiles (for callers who may see only some). */
  profiles?: readonly string[];
  labels?: Readonly<Record<string, string>>;
  /** Only operations whose name sorts before this one (names are time-ordered: older). */
  beforeName?: string;
  limit: number;
}

export interface EventBounds {
  /** Sequence of the oldest retained event; `latest + 1` when none is retained. */
  oldest: bigint;
  /** Sequence of the newest event; 0 when none was ever written. */
  latest: bigint;
}

/**
 * Which events a history page holds, as the store can select them by its indexed columns. Each
 * set field narrows; a list matches any of its elements, and an empty list matches nothing.
 */
export interface EventSelection {
  profiles?: readonly string[];
  operations?: readonly string[];
  operationTypes?: readonly OperationType[];
  types?: readonly EventType[];
  states?: readonly TaskState[];
}

/** One bounded page of history: the selected events with `after` < sequence ≤ `through`, at most `limit`. */
export interface EventPageQuery extends EventSelection {
  after: bigint;
  through: bigint;
  limit: number;
}

export interface EventPage {
  /** In sequence order. */
  events: StoredEvent[];
  /**
   * The oldest retained sequence, read no earlier than the events: when it is beyond
   * `after + 1`, compaction may have removed events of the page before they were read.
   */
  oldest: bigint;
}

export interface RetentionPolicy {
  /** Keep at most this many events. */
  maxEvents: number;
  /** Drop events older than this many milliseconds. */
  maxAgeMs: number;
}

// Audited writes (an `audit` draft on createOperation, modifyOperation, putChildDelegation,
// revokeDelegationSubtree, putPolicyBundle, putMcpUpstream, deleteMcpUpstream) seal the command's record onto the head of the audit
// chain (src/model/audit-chain.ts) in the same commit as their effect: one record when the write
// changes something, none when it is refused or changes nothing. The store fills in what only
// the commit knows: the sequence and hashes, the time when the draft has none, and an empty
// `resource` with the name of what the write acted on (the operation it created or changed, the
// child delegation, the revoked delegation, the new policy bundle version, `mcp-upstreams/{name}`).

/** A delegation in a subtree listing, with its place in the listing's order. */
export interface SubtreeEntry {
  delegation: Delegation;
  /** 0 for the subtree's root, 1 for its children, … */
  depth: number;
}

/** A page of a subtree listing (listDelegationSubtree). */
export interface SubtreePage {
  /** Only entries after this one in the listing's order (depth, then name). */
  after?: { depth: number; name: string };
  limit: number;
  /** Only delegations neither revoked nor expired at this time. */
  activeAt?: Date;
}

/** A page of the bundles in force (listPolicyBundles). */
export interface BundlePage {
  /** Only profile types after this one. */
  after: ProfileType;
  limit: number;
}

/** A page of the declared MCP upstreams (listMcpUpstreams). */
export interface McpUpstreamPage {
  /** Only upstreams whose name sorts after this one (byte order). */
  after: string;
  limit: number;
}

/** Which audit records, in sequence order; every set field must match. */
export interface AuditQuery {
  /** Only records with a larger sequence. */
  afterSequence: bigint;
  /** Only records with a sequence up to this one: bounds a page's scan where the filter matches little. */
  throughSequence?: bigint;
  limit: number;
  principal?: string;
  delegation?: string;
  operationTypes?: readonly OperationType[];
  /** Only allowed (true) or only denied (false) commands. */
  allowed?: boolean;
  /** Only records at or after this time. */
  startTime?: Date;
  /** Only records before this time. */
  endTime?: Date;
}

/** What pruneAuditLog did, or why it did nothing. */
export type AuditPruneResult =
  /** `records` deleted: 0 when an earlier prune had already deleted them. */
  | { kind: "pruned"; records: bigint; checkpoint: AuditCheckpoint }
  /** No checkpoint of that size is stored. */
  | { kind: "no-checkpoint" }
  /** The checkpoint states another head hash than the caller's. */
  | { kind: "head-mismatch"; checkpoint: AuditCheckpoint }
  /** The stored record of the checkpoint's size is missing or not the one it signed. */
  | { kind: "log-mismatch"; checkpoint: AuditCheckpoint };

/** An output stream of an execution attempt (src/lifecycle/attempt-output.ts writes them). */
export interface OutputKey {
  operation: string;
  attempt: number;
  stream: OutputStreamName;
}

export type OutputStreamName = "stdout" | "stderr";

/** What is known of a stored output stream. */
export interface OutputState {
  /** Bytes stored: the offset the next append must start at. */
  size: bigint;
  /** No append follows (the attempt ended, or the writer said so). */
  ended: boolean;
  /** With `ended`: the program wrote more than the output limit. */
  truncated: boolean;
}

export interface OutputAppend extends OutputKey {
  /** Where `data` starts: the stream's size when the writer last heard of it. */
  offset: bigint;
  data: Uint8Array;
  /** Set on the stream's last append. */
  end?: { truncated: boolean };
  time: Date;
}

/**
 * How an append went (src/store/output-rows.ts decides): stored (also a retried append that was
 * already stored, which changes nothing), or refused because it starts beyond the stored bytes
 * (`gap`) or adds bytes to a stream that ended (`ended`). `size` is the stream's size after it.
 */
export type OutputAppendResult = { kind: "stored" | "gap" | "ended"; size: bigint };

export interface OutputRead {
  /** Stored bytes from the offset asked for, in order, without gaps. */
  chunks: { offset: bigint; data: Uint8Array }[];
  /** Undefined when nothing of the stream is stored (not started, or removed after retention). */
  state?: OutputState;
}

/** Runner processes: who is alive, and whether one process owns the store. */
export interface StoreRunners {
  /**
   * Whether only one server process uses this store at a time (the embedded store: one data
   * dir, one process), so that every task a previous process left running is its orphan.
   */
  readonly exclusive: boolean;
  /** Records that the runner `runner` (one per server process) is alive at `at`. */
  heartbeat(runner: string, at: Date): Promise<void>;
  /** When each runner last said it was alive. */
  runnerHeartbeats(): Promise<Map<string, Date>>;
}

/** Operations: their creation, changes and reads. */
export interface StoreOperations {
  /** Creates an operation (idempotent on its request id within its idempotency scope). Durable when the promise resolves. */
  createOperation(input: NewOperation): Promise<CreateResult>;
  /** Changes an operation and appends its event in one commit. Durable when it resolves. */
  updateOperation(update: OperationUpdate): Promise<UpdateResult>;
  /**
   * Reads an operation and writes what `modify` makes of it in one commit, so concurrent
   * modifications never lose each other's changes. With `onceKey`, a second modification with
   * the same key is refused ("already-done") — the key is recorded in the same commit.
   */
  modifyOperation(name: string, modify: Modification, onceKey?: string, audit?: AuditDraft): Promise<ModifyResult>;
  /**
   * modifyOperation for the claim that starts an execution: in the same commit, checks that
   * fewer than `cap` executions are running under each slot key (counted over every replica:
   * running operations whose reservation is held on the key), else changes nothing ("no-slot").
   */
  claimOperation(name: string, slots: readonly SlotKey[], modify: Modification): Promise<ClaimResult>;
  getOperation(name: string): Promise<Operation | undefined>;
  /** The operation submitted with this request id in this idempotency scope, and the digest of that request. */
  findByRequestId(scope: string, requestId: string): Promise<{ operation: Operation; requestDigest: string } | undefined>;
  listOperations(query: OperationQuery): Promise<Operation[]>;
  /** Operations not in a terminal state, oldest first (for recovery after a restart). */
  listActiveOperations(): Promise<Operation[]>;
}

/** The event log and its commit feed. */
export interface StoreEvents {
  /** Events with sequence > `after`, in sequence order, at most `limit`. */
  readEvents(after: bigint, limit: number): Promise<StoredEvent[]>;
  /** One page of history selected in the query (by indexes), for replays (src/lifecycle/history-replay.ts). */
  readEventPage(query: EventPageQuery): Promise<EventPage>;
  eventBounds(): Promise<EventBounds>;
  /** Deletes events outside the policy; returns how many. */
  compactEvents(policy: RetentionPolicy, now: Date): Promise<number>;
  /**
   * Called with committed events, in sequence order, each once, after their commit. With a
   * store that several servers share, that is every server's commits; a write's promise
   * resolves after its own events were passed on.
   */
  onCommit(listener: (events: StoredEvent[]) => void): void;
}

/** Executions' output streams. */
export interface StoreOutput {
  /** Appends bytes (or the end) to an execution's output stream, in one commit; idempotent on the offset. */
  appendOutput(append: OutputAppend): Promise<OutputAppendResult>;
  /** Stored bytes of `key` from offset `from` on, in at most `limit` chunks. */
  readOutput(key: OutputKey, from: bigint, limit: number): Promise<OutputRead>;
  /** Deletes the output streams last appended to before `before`; returns how many. */
  compactOutput(before: Date): Promise<number>;
  /**
   * Called after a commit of this instance appended output (a wake-up for its readers; with a
   * shared store, other instances' appends are only seen by reading).
   */
  onOutput(listener: (key: OutputKey) => void): void;
}

/** Values the server keeps for itself. */
export interface StoreSecrets {
  /** A value the store keeps for the server (e.g. the page-token key), created once. */
  getOrCreateSecret(key: string, create: () => string): Promise<string>;
}

/** Delegations and their subtrees. */
export interface StoreDelegations {
  /** Records a delegation unless one with its name exists; returns the stored one. */
  putDelegation(delegation: Delegation): Promise<Delegation>;
  /**
   * Records a child delegation if `check(siblings, parentHeld)` — run in the same commit, over
   * the parent's other children and what its subtree holds — returns no error; throws
   * that error otherwise. With `key`, nothing at all if the key is recorded already (KeyedCreate).
   */
  putChildDelegation(
    child: Delegation,
    check: (siblings: ChildAccount[], parentHeld: Budget) => Error | undefined,
    audit?: AuditDraft,
    key?: RequestKey,
  ): Promise<KeyedCreate<Delegation>>;
  getDelegation(name: string): Promise<Delegation | undefined>;
  /**
   * The delegation and every descendant, parents before children: by depth below `name`, then
   * by name. With `page`, only the part of that order after `page.after`, at most `page.limit`.
   */
  listDelegationSubtree(name: string, page?: SubtreePage): Promise<SubtreeEntry[]>;
  /** Revokes the delegation and every descendant not yet revoked, in one commit; returns those it revoked. */
  revokeDelegationSubtree(name: string, time: Date, reason: string, audit?: AuditDraft): Promise<Delegation[]>;
}

/** Budget accounts and the profiles that own some of them. */
export interface StoreAccounts {
  getProfile(name: string): Promise<StoredProfile | undefined>;
  /** The current state of budget accounts, read without changing them (for dry runs). */
  readAccounts(accounts: readonly string[]): Promise<AccountState[]>;
}

/** Policy bundles and their versions. */
export interface StoreBundles {
  /**
   * Stores a policy bundle as the next version for its profile type; returns it with name and
   * version. With `key`, nothing if the key is recorded already (KeyedCreate).
   */
  putPolicyBundle(bundle: PolicyBundle, audit?: AuditDraft, key?: RequestKey): Promise<KeyedCreate<PolicyBundle>>;
  /** A stored bundle by name, `policyBundles/{profile_type}/versions/{version}`, in force or not. */
  getPolicyBundle(name: string): Promise<PolicyBundle | undefined>;
  /** The newest bundle of each profile type, in profile type order; with `page`, of the profile types after `page.after`, at most `page.limit`. */
  listPolicyBundles(page?: BundlePage): Promise<PolicyBundle[]>;
}

/**
 * The upstream MCP servers declared through McpUpstreamService, by name. Every change moves a
 * version that all processes sharing the store read, so a gateway re-reads the declarations
 * exactly when one changed (src/gateways/mcp-upstream-declarations.ts).
 */
export interface StoreMcpUpstreams {
  /** Stores `upstream` under its name, replacing the one of that name if any; whether it was new. */
  putMcpUpstream(upstream: McpUpstream, audit?: AuditDraft): Promise<{ created: boolean }>;
  /** Deletes the upstream named `name` and returns it; undefined, and nothing written (no audit record either), when there was none. */
  deleteMcpUpstream(name: string, audit?: AuditDraft): Promise<McpUpstream | undefined>;
  /** The upstreams in name order (byte order); with `page`, those after `page.after`, at most `page.limit`. */
  listMcpUpstreams(page?: McpUpstreamPage): Promise<McpUpstream[]>;
  /** Moves (grows) with every put and delete, by any process sharing the store, in the commit of the change. */
  mcpUpstreamsVersion(): Promise<bigint>;
}

/** The audit log and its checkpoints. */
export interface StoreAudit {
  /** Appends a record that comes with no other write (a denied attempt); returns it sealed. */
  appendAudit(draft: AuditDraft): Promise<AuditRecord>;
  /** The newest audit record's sequence and hash; undefined while the log is empty. */
  auditHead(): Promise<ChainHead | undefined>;
  /** Audit records matching `query`, in sequence order, at most `limit`. */
  listAuditRecords(query: AuditQuery): Promise<AuditRecord[]>;
  /** Records a signed checkpoint; one of the same size already stored is kept. */
  putAuditCheckpoint(checkpoint: AuditCheckpoint): Promise<void>;
  /** Checkpoints with size > `afterSize`, smallest first, at most `limit`. */
  listAuditCheckpoints(afterSize: bigint, limit: number): Promise<AuditCheckpoint[]>;
  latestAuditCheckpoint(): Promise<AuditCheckpoint | undefined>;
  /**
   * In one commit: appends `audit` (the prune's own record, its empty resource filled in with
   * `auditCheckpoints/{size}`; see "Audited writes"), then deletes the audit records up to
   * `size` and the checkpoints smaller than `size` — provided a checkpoint of `size` is stored,
   * states `headHash`, and the stored record `size` is the one it signed. The checkpoint itself
   * stays: the retained log starts from it. With nothing left to delete, changes nothing and
   * appends nothing.
   */
  pruneAuditLog(size: bigint, headHash: string, audit?: AuditDraft): Promise<AuditPruneResult>;
  /**
   * Called after a commit of this instance appended audit records, with the sequence of the
   * last one (a wake-up for watchers and the checkpointer; with a shared store, other
   * instances' appends are only seen by reading).
   */
  onAuditAppend(listener: (sequence: bigint) => void): void;
}

/** The store as a connection: whether its database is reachable, and closing it. */
export interface StoreConnection {
  /**
   * Called when the store loses its database (false, with the reason) and when it is back and
   * has caught up with what was committed meanwhile (true). A store that cannot lose its
   * database (the embedded SQLite file) never calls it.
   */
  onAvailability(listener: (available: boolean, reason?: string) => void): void;
  close(): Promise<void>;
}

/**
 * The whole store, as the two backends implement it. A consumer depends on the roles it uses
 * (`StoreOperations & StoreEvents`…), not on this.
 */
export interface OperationStore
  extends StoreRunners,
    StoreOperations,
    StoreEvents,
    StoreOutput,
    StoreSecrets,
    StoreDelegations,
    StoreAccounts,
    StoreBundles,
    StoreMcpUpstreams,
    StoreAudit,
    StoreConnection {}
