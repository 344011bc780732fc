// The PostgreSQL store, for running several replicas of the server on one database. It passes
// the same conformance suite as the embedded SQLite store (test/store/conformance.ts).
//
// Every write is one transaction on a pooled connection, committed before its promise resolves
// (the server's own durability: synchronous_commit as configured on the database).
//
// Event sequences: a transaction that appends an event takes the next number from the single
// row of `event_counter` (`UPDATE event_counter SET value = value + 1 RETURNING value`, in the
// same statement that inserts the event) and keeps that row locked until it commits. Appenders
// are thereby serialized: sequence N+1 cannot be handed out before the transaction holding N has
// committed or rolled back, so commit order equals sequence order, and a reader tailing
// "sequence > last" can never see N+1 before N and skip it. A SEQUENCE would be cheaper but
// hands out numbers outside the transaction, so a larger number could commit first. To keep the
// lock short it is always taken last in a transaction: after the operation row, the budget
// accounts and the delegation rows, just before the operation itself is written. A rolled-back
// transaction gives its number back, so sequences stay contiguous.
//
// Check-then-write in one commit, correct across replicas (READ COMMITTED, row locks):
// - a reservation locks its budget account rows (created empty, ON CONFLICT DO NOTHING, if
//   missing), in account order so two reservations never deadlock, runs its check over what it
//   read under the lock, and records itself (table reservations) for its settlement; a
//   settlement takes that record (DELETE … RETURNING: a second settlement finds none) and locks
//   the same accounts. A child delegation's holdings, reported with its parent's account, only
//   change under a lock of the parent's row too, since reservations hold the whole chain;
// - putChildDelegation locks the parent delegation row and then the parent's budget account row
//   (the one reservations on that delegation lock), so neither the parent's holdings nor its
//   children change under the check;
// - updateOperation and modifyOperation lock the operation row (SELECT … FOR UPDATE), so a
//   modification always starts from the latest committed form and none is lost;
// - policy bundle versions are numbered under a transaction-scoped advisory lock per profile
//   type; a request id submitted twice at once is resolved by retrying the losing transaction,
//   which then finds the winner's operation.
// Deadlocks and serialization failures, which the lock order should rule out, are retried.
//
// onCommit: every event committed by ANY replica on the database reaches this instance's
// listeners, in sequence order, each once, and only after its commit (event-feed.ts). An appending
// transaction notifies the channel `amctl_events` (pg_notify in the same statement as the append,
// delivered by PostgreSQL at commit, dropped at rollback); each instance keeps one connection of
// its own that LISTENs (listen-connection.ts) and, on a notification, on its own commits and on a
// poll every second, reads "sequence > last delivered" on that connection — which, commit order
// being sequence order, never skips an event. A writer is answered after its own events were
// delivered, so the event hub (src/lifecycle/event-hub.ts) knows a write before its client can
// watch for it, and the hub's in-memory window stays complete with any number of replicas.
//
// Audit records: an audited write appends its record last, after any event, under a row lock on
// the one row of `audit_head` (SELECT … FOR UPDATE), held until it commits. Appends by every
// replica are thereby serialized like event appends: each record links to the one committed
// before it, sequences are gapless and commit in order, and the chain never forks. Taking this
// lock last (after the event counter) keeps the lock order the same in every transaction.
//
// onAvailability: when the feed's connection is lost, the instance reports itself unavailable
// (the server turns NOT_SERVING), reconnects with backoff, reads what it missed, and reports
// itself available again; subscribers resume where they were, without loss.
import { decodeOperation } from "../stored-messages.js";
import { clone, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Pool, type PoolClient, type PoolConfig, type QueryResultRow } from "pg";
import type { AuditDraft, ChainHead } from "../../model/audit-chain.js";
import type { AuditCheckpoint, AuditRecord } from "../../gen/agentmachine/v1/audit_pb.js";
import type { Budget } from "../../gen/agentmachine/v1/budget_pb.js";
import { DelegationSchema, type Delegation } from "../../gen/agentmachine/v1/delegation_pb.js";
import type { OperationEvent } from "../../gen/agentmachine/v1/event_pb.js";
import { OperationSchema, type Operation } from "../../gen/agentmachine/v1/operation_pb.js";
import { McpUpstreamSchema, type McpUpstream } from "../../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { PolicyBundleSchema, type PolicyBundle } from "../../gen/agentmachine/v1/policy_pb.js";
import { TaskState } from "../../gen/agentmachine/v1/types_pb.js";
import {
  AUDIT_COLUMNS,
  CHECKPOINT_COLUMNS,
  auditQuerySql,
  auditRowValues,
  checkpointFromRow,
  checkpointRowValues,
  recordFromRow,
  sealDraft,
  type CheckpointRow,
} from "../audit-rows.js";
import type {
  AccountState,
  AuditPruneResult,
  AuditQuery,
  BundlePage,
  ChildAccount,
  ClaimResult,
  CreateResult,
  EventBounds,
  EventPage,
  EventPageQuery,
  KeyedCreate,
  McpUpstreamPage,
  Modification,
  ModifyResult,
  NewOperation,
  OperationQuery,
  OperationStore,
  OperationUpdate,
  OutputAppend,
  OutputAppendResult,
  OutputKey,
  OutputRead,
  OutputState,
  RequestKey,
  RetentionPolicy,
  SlotKey,
  StoredEvent,
  StoredProfile,
  SubtreeEntry,
  SubtreePage,
  UpdateResult,
} from "../store.js";
import { delegationFromRow, delegationRowValues, subtreeSql } from "../delegation-rows.js";
import { bundleRowValues, parseBundleName, REQUEST_KEY_COLUMNS, requestKeyValues, takenKey, type RequestKeyRow } from "../request-keys.js";
import { budgetColumn, budgetFromColumn } from "../budget-rows.js";
import {
  EVENT_COLUMNS,
  TERMINAL_STATES,
  activeOperations,
  appendedEvent,
  eventRowValues,
  operationRowValues,
  operationUpdateValues,
  profileFromRow,
} from "../operation-rows.js";
import { postgresPlaceholder, statements } from "../statements.js";
import { runAsync } from "../steps.js";
import {
  claimOperationSteps,
  createOperationSteps,
  modifyOperationSteps,
  revokeSubtreeSteps,
  updateOperationSteps,
  appendOutputSteps,
  putChildDelegationSteps,
  putPolicyBundleSteps,
  putMcpUpstreamSteps,
  deleteMcpUpstreamSteps,
  pruneAuditLogSteps,
  type WriteRows,
} from "../write-steps.js";
import { checkout } from "./checkout.js";
import { clientConfig } from "./client-config.js";
import { EventFeed } from "./event-feed.js";
import { EVENTS_CHANNEL, selectEventBounds, selectEventPage, selectEvents } from "./event-rows.js";
import { ListenConnection } from "./listen-connection.js";
import { migrate } from "./migrations.js";
import { appendResult, outputRead } from "../output-rows.js";

const sql = statements(postgresPlaceholder, (placeholder) => `${placeholder}::jsonb`);

/** Namespace (first key) of the transaction-scoped advisory locks that number policy bundles. */
const POLICY_BUNDLE_LOCK = 0x616d7062; // "ampb"

/** Attempts of one write when it meets a deadlock, a serialization failure or a request-id race. */
const MAX_ATTEMPTS = 5;

function sqlState(error: unknown): string | undefined {
  return typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined;
}

function isTransient(error: unknown): boolean {
  const state = sqlState(error);
  return state === "40001" || state === "40P01";
}

function isUniqueViolation(constraint: string): (error: unknown) => boolean {
  return (error) => sqlState(error) === "23505" && (error as { constraint?: string }).constraint === constraint;
}

/** The audit head as stored: sequence 0 while the log is empty. */
function chainHead(row: { sequence: bigint; hash: string }): ChainHead | undefined {
  return row.sequence === 0n ? undefined : { sequence: row.sequence, hash: row.hash };
}

/** One write transaction: its connection and the events and audit records it appended. */
class Transaction {
  readonly events: StoredEvent[] = [];
  /** The last audit record it appended, if any. */
  auditAppended: bigint | undefined;

  constructor(private readonly client: PoolClient) {}

  async query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<{ rows: R[]; rowCount: number }> {
    const result = await this.client.query<R>(sql, params);
    return { rows: result.rows, rowCount: result.rowCount ?? 0 };
  }

  /** Appends an event and notifies the other replicas at commit (see the module comment); returns it with its sequence. */
  async appendEvent(operation: Operation, event: OperationEvent): Promise<StoredEvent> {
    const { rows } = await this.query<{ sequence: bigint }>(
      `WITH next AS (UPDATE event_counter SET value = value + 1 RETURNING value),
       appended AS (
         INSERT INTO events (sequence, ${EVENT_COLUMNS})
         SELECT value, $1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9 FROM next
         RETURNING sequence
       )
       SELECT sequence, pg_notify($10, sequence::text) FROM appended`,
      [...eventRowValues(operation, event), EVENTS_CHANNEL],
    );
    const stored = appendedEvent(operation, event, rows[0]!.sequence);
    this.events.push(stored);
    return stored;
  }

  /** Seals `draft` onto the head under the head's row lock (see the module comment); returns the record. */
  async appendAudit(draft: AuditDraft, actedOn: string): Promise<AuditRecord> {
    const { rows } = await this.query<{ sequence: bigint; hash: string }>("SELECT sequence, hash FROM audit_head FOR UPDATE");
    const sealed = sealDraft(draft, chainHead(rows[0]!), actedOn);
    const { record } = sealed;
    await this.query(
      `WITH moved AS (UPDATE audit_head SET sequence = $1, hash = $7)
       INSERT INTO audit_records (${AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      auditRowValues(sealed),
    );
    this.auditAppended = record.sequence;
    return record;
  }
}

export class PostgresStore implements OperationStore {
  /** Several replicas share the database. */
  readonly exclusive = false;
  private readonly listeners: ((events: StoredEvent[]) => void)[] = [];
  private readonly availabilityListeners: ((available: boolean, reason?: string) => void)[] = [];
  private readonly auditListeners: ((sequence: bigint) => void)[] = [];
  private readonly outputListeners: ((key: OutputKey) => void)[] = [];
  private readonly feed = new EventFeed({
    read: (after, limit) => selectEvents(this.listen, after, limit),
    deliver: (events) => {
      for (const listener of this.listeners) listener(events);
    },
  });
  private readonly listen: ListenConnection;
  private readonly writes = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly pool: Pool,
    config: PoolConfig,
  ) {
    this.listen = new ListenConnection(config, EVENTS_CHANNEL, {
      notified: (sequence) => this.feed.notified(sequence),
      catchUp: () => this.feed.catchUp(),
      availability: (available, reason) => {
        for (const listener of this.availabilityListeners) listener(available, reason);
      },
    });
  }

  /** Connects (a `postgres://` URL or pool settings), brings the schema up to date and starts the event feed. */
  static async open(connection: string | PoolConfig): Promise<PostgresStore> {
    const config = clientConfig(connection);
    const pool = new Pool(config);
    // An idle connection that breaks (the server restarted) is dropped by the pool and the next
    // query opens a new one; without a listener its error would end the process.
    pool.on("error", () => undefined);
    const store = new PostgresStore(pool, config);
    try {
      await migrate(pool);
      // LISTEN before reading where the events end: no later commit goes unannounced.
      await store.listen.start();
      const { rows } = await store.listen.query<{ value: bigint }>("SELECT value FROM event_counter");
      store.feed.start(rows[0]!.value);
    } catch (error) {
      await store.listen.close();
      await pool.end();
      throw error;
    }
    return store;
  }

  onCommit(listener: (events: StoredEvent[]) => void): void {
    this.listeners.push(listener);
  }

  onAvailability(listener: (available: boolean, reason?: string) => void): void {
    this.availabilityListeners.push(listener);
  }

  onAuditAppend(listener: (sequence: bigint) => void): void {
    this.auditListeners.push(listener);
  }

  /** Runs `work` in one transaction, retried from the start on a transient conflict. */
  private write<T>(work: (tx: Transaction) => Promise<T>, retryOn?: (error: unknown) => boolean): Promise<T> {
    if (this.closing !== undefined) return Promise.reject(new Error("the store is closed"));
    const promise = this.runWrite(work, retryOn);
    this.writes.add(promise);
    promise.then(
      () => this.writes.delete(promise),
      () => this.writes.delete(promise),
    );
    return promise;
  }

  private async runWrite<T>(work: (tx: Transaction) => Promise<T>, retryOn?: (error: unknown) => boolean): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const { client, release } = await checkout(this.pool);
      const tx = new Transaction(client);
      let value: T;
      try {
        await client.query("BEGIN");
        value = await work(tx);
        // COMMIT of a transaction that already failed answers ROLLBACK instead of an error.
        const commit = await client.query("COMMIT");
        if (commit.command !== "COMMIT") throw new Error(`the transaction was rolled back (${commit.command})`);
      } catch (error) {
        const broken = await client.query("ROLLBACK").then(
          () => undefined,
          (rollbackError: Error) => rollbackError,
        );
        // A connection that cannot roll back is closed rather than handed to the next writer.
        release(broken);
        if (attempt < MAX_ATTEMPTS && (isTransient(error) || retryOn?.(error) === true)) continue;
        throw error;
      }
      release();
      const appended = tx.auditAppended;
      if (appended !== undefined) for (const listener of this.auditListeners) listener(appended);
      // The writer is answered once its events are delivered (see the module comment).
      await this.feed.committed(tx.events);
      return value;
    }
  }

  /**
   * Locks the accounts' rows (creating missing ones empty), in account order, and reads them;
   * with `children`, also the child delegations of delegation accounts and what each holds.
   */
  private async lockAccounts(tx: Transaction, accounts: readonly string[], children: boolean): Promise<Map<string, AccountState>> {
    const unique = [...new Set(accounts)].sort();
    await tx.query("INSERT INTO budget_accounts (account) SELECT unnest($1::text[]) ON CONFLICT (account) DO NOTHING", [unique]);
    return this.accountStates(tx, unique, { lock: true, children });
  }

  /** Reads accounts (an account without a row holds nothing), locking their rows with `lock`. */
  private async accountStates(
    tx: Pick<Transaction, "query">,
    unique: readonly string[],
    options: { lock: boolean; children: boolean },
  ): Promise<Map<string, AccountState>> {
    const { rows } = await tx.query<{ account: string; held: Uint8Array }>(
      `SELECT account, held FROM budget_accounts WHERE account = ANY($1::text[]) ORDER BY account${options.lock ? " FOR UPDATE" : ""}`,
      [unique],
    );
    const states = new Map<string, AccountState>();
    for (const account of unique) states.set(account, { account, held: budgetFromColumn(undefined), children: [] });
    for (const row of rows) states.get(row.account)!.held = budgetFromColumn(row.held);
    const delegations = unique.filter((account) => account.startsWith("delegations/"));
    if (options.children && delegations.length > 0) {
      const found = await tx.query<{ parent: string; data: Uint8Array; held: Uint8Array | null }>(
        `SELECT d.parent, d.data, b.held FROM delegations d LEFT JOIN budget_accounts b ON b.account = d.id
         WHERE d.parent = ANY($1::text[]) ORDER BY d.id`,
        [delegations],
      );
      for (const row of found.rows) {
        const child: ChildAccount = { delegation: delegationFromRow(row), held: budgetFromColumn(row.held) };
        states.get(row.parent)!.children.push(child);
      }
    }
    return states;
  }

  async readAccounts(accounts: readonly string[]): Promise<AccountState[]> {
    const { client, release } = await checkout(this.pool);
    let broken: Error | undefined;
    try {
      // One snapshot for the accounts and their children.
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const reader = {
        query: async <R extends QueryResultRow>(sql: string, params: unknown[] = []) => {
          const result = await client.query<R>(sql, params);
          return { rows: result.rows, rowCount: result.rowCount ?? 0 };
        },
      };
      const states = await this.accountStates(reader, [...new Set(accounts)], { lock: false, children: true });
      await client.query("COMMIT");
      return accounts.map((account) => states.get(account)!);
    } catch (error) {
      broken = await client.query("ROLLBACK").then(
        () => undefined,
        (rollbackError: Error) => rollbackError,
      );
      throw error;
    } finally {
      release(broken);
    }
  }

  /** The shared writes' statements (write-steps.ts) in `tx`, with the row locks the module comment lists. */
  private rowsOf(tx: Transaction): WriteRows {
    return {
      byRequestId: async (scope, requestId) => (await tx.query<{ request_digest: string; data: Uint8Array }>(sql.byRequestId, [scope, requestId])).rows[0],
      insertProfile: async (values) =>
        (await tx.query("INSERT INTO profiles (name, profile_type, operation, budget) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING", values))
          .rowCount > 0,
      lockAccounts: (accounts, children) => this.lockAccounts(tx, accounts, children),
      putHeld: async (held) => {
        for (const [account, budget] of held) {
          await tx.query("UPDATE budget_accounts SET held = $2 WHERE account = $1", [account, budgetColumn(budget)]);
        }
      },
      insertReservation: (operation, accounts, amount) =>
        tx.query("INSERT INTO reservations (operation, accounts, amount) VALUES ($1, $2::text[], $3)", [operation, [...accounts], budgetColumn(amount)]),
      // A second settlement finds none: the first took it.
      takeReservation: async (operation) => {
        const { rows } = await tx.query<{ accounts: string[]; amount: Uint8Array }>(
          "DELETE FROM reservations WHERE operation = $1 RETURNING accounts, amount",
          [operation],
        );
        return rows[0] && { accounts: rows[0].accounts, amount: budgetFromColumn(rows[0].amount) };
      },
      appendEvent: (operation, event) => tx.appendEvent(operation, event),
      insertOperation: (input, operation) => tx.query(sql.insertOperation, operationRowValues(input, operation)),
      lockOperation: async (name) => (await tx.query<{ state: number; data: Uint8Array }>(`${sql.stateOf} FOR UPDATE`, [name])).rows[0],
      writeOperation: (operation) => tx.query(sql.updateOperation, operationUpdateValues(operation)),
      recordOnceKey: async (key) => (await tx.query("INSERT INTO once_keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", [key])).rowCount > 0,
      // The operation row first, then the slot keys' account rows (the order settlements take),
      // so that claims under one key are serialized across replicas while they count.
      lockClaim: async (name, keys) => {
        await tx.query("SELECT 1 FROM operations WHERE name = $1 FOR UPDATE", [name]);
        await this.lockAccounts(tx, keys, false);
      },
      runningUnder: async (key) => {
        const { rows } = await tx.query<{ n: bigint }>(
          "SELECT count(*) AS n FROM reservations r JOIN operations o ON o.name = r.operation WHERE o.state = $1 AND $2 = ANY(r.accounts)",
          [TaskState.RUNNING, key],
        );
        return BigInt(rows[0]!.n);
      },
      // Locked parents first: a concurrent revocation of an overlapping subtree locks them in the
      // same order, and reads `revoked` as that one committed it.
      lockSubtree: async (name) =>
        (await tx.query<{ id: string; revoked: boolean; data: Uint8Array }>(`${PostgresStore.subtreeSql} FOR UPDATE OF d`, [name])).rows,
      writeRevoked: (id, delegation) =>
        tx.query("UPDATE delegations SET revoked = TRUE, data = $1 WHERE id = $2", [toBinary(DelegationSchema, delegation), id]),
      appendAudit: (draft, actedOn) => tx.appendAudit(draft, actedOn),
      // The parent delegation row, then the parent's budget account row — which reservations on
      // the parent lock too — and only then its holdings and children are read: neither changes
      // until this commit.
      lockParent: async (parent) => {
        await tx.query("SELECT 1 FROM delegations WHERE id = $1 FOR UPDATE", [parent]);
        return (await this.lockAccounts(tx, [parent], true)).get(parent)!;
      },
      insertDelegation: (delegation) => this.insertDelegation(tx, delegation),
      takeKey: (key, resource) => this.takeKey(tx, key, resource),
      lockBundleVersions: (profileType) => tx.query("SELECT pg_advisory_xact_lock($1, $2)", [POLICY_BUNDLE_LOCK, profileType]),
      latestBundleVersion: async (profileType) => (await tx.query<{ version: bigint | null }>(sql.latestBundleVersion, [profileType])).rows[0]?.version,
      insertBundle: (bundle) => tx.query(sql.insertBundle, bundleRowValues(bundle)),
      // The version's row: changes of the declared upstreams wait for each other (reads do not).
      lockMcpUpstreams: () => tx.query("SELECT version FROM mcp_upstream_changes FOR UPDATE"),
      getMcpUpstream: async (name) => (await tx.query<{ data: Uint8Array }>(sql.getMcpUpstream, [name])).rows[0]?.data,
      putMcpUpstream: (name, data) => tx.query(sql.putMcpUpstream, [name, data]),
      deleteMcpUpstream: (name) => tx.query(sql.deleteMcpUpstream, [name]),
      bumpMcpUpstreamsVersion: () => tx.query(sql.bumpMcpUpstreamsVersion),
      // The head's lock first: appends and other prunes wait until this commits, and what is
      // read next is the log as it stands (each statement sees what committed before it).
      lockAuditHead: () => tx.query("SELECT sequence FROM audit_head FOR UPDATE"),
      checkpointOfSize: async (size) => (await tx.query<CheckpointRow>(sql.checkpointOfSize, [size])).rows[0],
      firstAudit: async () => (await tx.query<{ first: bigint | null }>(sql.firstAudit)).rows[0]!.first,
      auditHashAt: async (sequence) => (await tx.query<{ hash: string }>(sql.auditHashAt, [sequence])).rows[0]?.hash,
      deleteAuditUpTo: async (size) => {
        const { rowCount } = await tx.query(sql.deleteAuditUpTo, [size]);
        await tx.query(sql.deleteCheckpointsBefore, [size]);
        return rowCount;
      },
      lockOutputState: (key) => this.outputStateOf(tx, key, true),
      insertOutputChunk: ({ operation, attempt, stream }, offset, data) => tx.query(sql.insertOutputChunk, [operation, attempt, stream, offset, data]),
      writeOutputState: ({ operation, attempt, stream }, existed, { size, ended, truncated }, timeMs) =>
        tx.query(
          existed
            ? "UPDATE output_streams SET size = $4, ended = $5, truncated = $6, updated_ms = $7 WHERE operation = $1 AND attempt = $2 AND stream = $3"
            : "INSERT INTO output_streams (operation, attempt, stream, size, ended, truncated, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
          [operation, attempt, stream, size, ended, truncated, timeMs],
        ),
    };
  }

  createOperation(input: NewOperation): Promise<CreateResult> {
    // Snapshot now: the caller may go on changing its object before the commit.
    const submitted = clone(OperationSchema, input.operation);
    return this.write(
      (tx) => runAsync(createOperationSteps(this.rowsOf(tx), input, clone(OperationSchema, submitted))),
      isUniqueViolation("operations_request_key_unique"),
    );
  }

  updateOperation(update: OperationUpdate): Promise<UpdateResult> {
    const submitted = clone(OperationSchema, update.operation);
    return this.write((tx) => runAsync(updateOperationSteps(this.rowsOf(tx), update, clone(OperationSchema, submitted))));
  }

  modifyOperation(name: string, modify: Modification, onceKey?: string, audit?: AuditDraft): Promise<ModifyResult> {
    return this.write((tx) => runAsync(modifyOperationSteps(this.rowsOf(tx), name, modify, onceKey, audit)));
  }

  claimOperation(name: string, slots: readonly SlotKey[], modify: Modification): Promise<ClaimResult> {
    return this.write((tx) => runAsync(claimOperationSteps(this.rowsOf(tx), name, slots, modify)));
  }

  async getOperation(name: string): Promise<Operation | undefined> {
    const { rows } = await this.pool.query<{ data: Uint8Array }>(sql.getOperation, [name]);
    return rows[0] && decodeOperation(rows[0].data);
  }

  async findByRequestId(scope: string, requestId: string): Promise<{ operation: Operation; requestDigest: string } | undefined> {
    const { rows } = await this.pool.query<{ request_digest: string; data: Uint8Array }>(sql.byRequestId, [scope, requestId]);
    const row = rows[0];
    return row && { operation: decodeOperation(row.data), requestDigest: row.request_digest };
  }

  async getProfile(name: string): Promise<StoredProfile | undefined> {
    const { rows } = await this.pool.query<{ name: string; profile_type: number; budget: Uint8Array | null }>(sql.getProfile, [name]);
    return rows[0] && profileFromRow(rows[0]);
  }

  async listOperations(query: OperationQuery): Promise<Operation[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (value: unknown): string => {
      args.push(value);
      return `$${args.length}`;
    };
    if (query.types?.length) where.push(`type = ANY(${arg([...query.types])}::int[])`);
    if (query.states?.length) where.push(`state = ANY(${arg([...query.states])}::int[])`);
    if (query.profile) where.push(`profile = ${arg(query.profile)}`);
    if (query.profiles !== undefined) where.push(query.profiles.length ? `profile = ANY(${arg([...query.profiles])}::text[])` : "FALSE");
    if (query.labels !== undefined && Object.keys(query.labels).length > 0) where.push(`labels @> ${arg(JSON.stringify(query.labels))}::jsonb`);
    if (query.beforeName) where.push(`name < ${arg(query.beforeName)}`);
    const sql = `SELECT data FROM operations ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY name DESC LIMIT ${arg(query.limit)}`;
    const { rows } = await this.pool.query<{ data: Uint8Array }>(sql, args);
    return rows.map((row) => decodeOperation(row.data));
  }

  async listActiveOperations(): Promise<Operation[]> {
    const { rows } = await this.pool.query<{ data: Uint8Array }>("SELECT data FROM operations WHERE state <> ALL($1::int[]) ORDER BY name", [TERMINAL_STATES]);
    return activeOperations(rows);
  }

  readEvents(after: bigint, limit: number): Promise<StoredEvent[]> {
    return selectEvents(this.pool, after, limit);
  }

  readEventPage(query: EventPageQuery): Promise<EventPage> {
    return selectEventPage(this.pool, query);
  }

  eventBounds(): Promise<EventBounds> {
    return selectEventBounds(this.pool);
  }

  compactEvents(policy: RetentionPolicy, now: Date): Promise<number> {
    return this.write(async (tx) => {
      const { rowCount } = await tx.query("DELETE FROM events WHERE sequence <= (SELECT value FROM event_counter) - $1 OR time_ms < $2", [
        policy.maxEvents,
        now.getTime() - policy.maxAgeMs,
      ]);
      return rowCount;
    });
  }

  private async outputStateOf(db: Pick<Transaction, "query">, key: OutputKey, lock = false): Promise<OutputState | undefined> {
    const { rows } = await db.query<OutputState>(
      `SELECT size, ended, truncated FROM output_streams WHERE operation = $1 AND attempt = $2 AND stream = $3${lock ? " FOR UPDATE" : ""}`,
      [key.operation, key.attempt, key.stream],
    );
    return rows[0];
  }

  async appendOutput(append: OutputAppend): Promise<OutputAppendResult> {
    // A first append of a stream inserts its row; two at once: one commits, the other is retried (and then updates it).
    const plan = await this.write((tx) => runAsync(appendOutputSteps(this.rowsOf(tx), append)), isUniqueViolation("output_streams_pkey"));
    if (plan.kind === "write")
      for (const listener of this.outputListeners) listener({ operation: append.operation, attempt: append.attempt, stream: append.stream });
    return appendResult(plan);
  }

  async readOutput(key: OutputKey, from: bigint, limit: number): Promise<OutputRead> {
    // The state first: when it says the stream ended, the chunks read after it are all of it.
    const state = await this.outputStateOf(this.pool, key);
    const { rows } = await this.pool.query<{ start_offset: bigint; data: Buffer }>(
      `SELECT start_offset, data FROM output_chunks WHERE operation = $1 AND attempt = $2 AND stream = $3
       AND start_offset >= COALESCE((SELECT MAX(start_offset) FROM output_chunks WHERE operation = $1 AND attempt = $2 AND stream = $3 AND start_offset <= $4), 0)
       ORDER BY start_offset LIMIT $5`,
      [key.operation, key.attempt, key.stream, from, limit],
    );
    return outputRead(rows, from, state);
  }

  compactOutput(before: Date): Promise<number> {
    return this.write(async (tx) => {
      await tx.query(sql.deleteOutputChunks, [before.getTime()]);
      return (await tx.query(sql.deleteOutputStreams, [before.getTime()])).rowCount;
    });
  }

  onOutput(listener: (key: OutputKey) => void): void {
    this.outputListeners.push(listener);
  }

  heartbeat(runner: string, at: Date): Promise<void> {
    return this.write(async (tx) => {
      await tx.query(sql.heartbeat, [runner, at.getTime()]);
    });
  }

  async runnerHeartbeats(): Promise<Map<string, Date>> {
    const { rows } = await this.pool.query<{ id: string; heartbeat_ms: bigint }>(sql.runnerHeartbeats);
    return new Map(rows.map((row) => [row.id, new Date(Number(row.heartbeat_ms))]));
  }

  async getOrCreateSecret(key: string, create: () => string): Promise<string> {
    return this.write(async (tx) => {
      await tx.query("INSERT INTO secrets (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", [key, create()]);
      const { rows } = await tx.query<{ value: string }>(sql.getSecret, [key]);
      return rows[0]!.value;
    });
  }

  private insertDelegation(tx: Transaction, delegation: Delegation): Promise<unknown> {
    return tx.query(
      "INSERT INTO delegations (id, parent, expire_ms, data) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
      delegationRowValues(delegation),
    );
  }

  putDelegation(delegation: Delegation): Promise<Delegation> {
    const stored = clone(DelegationSchema, delegation);
    return this.write(async (tx) => {
      await this.insertDelegation(tx, stored);
      const { rows } = await tx.query<{ data: Uint8Array }>(sql.getDelegation, [stored.name]);
      return delegationFromRow(rows[0]!);
    });
  }

  putChildDelegation(
    child: Delegation,
    check: (siblings: ChildAccount[], parentHeld: Budget) => Error | undefined,
    audit?: AuditDraft,
    key?: RequestKey,
  ): Promise<KeyedCreate<Delegation>> {
    const stored = clone(DelegationSchema, child);
    return this.write((tx) => runAsync(putChildDelegationSteps(this.rowsOf(tx), stored, check, audit, key)));
  }

  /**
   * Records `key` as naming `resource`, or answers for it if it is recorded already. A concurrent
   * create with the same key waits here until the first commits (then it answers for the key) or
   * rolls back (then it records the key itself).
   */
  private async takeKey(tx: Transaction, key: RequestKey, resource: string): Promise<KeyedCreate<never> | undefined> {
    const inserted = await tx.query(
      `INSERT INTO request_keys (${REQUEST_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
      requestKeyValues(key, resource),
    );
    if (inserted.rowCount === 1) return undefined;
    const { rows } = await tx.query<RequestKeyRow>(sql.getRequestKey, [key.scope, key.rpc, key.requestId]);
    return takenKey(key, rows[0]!);
  }

  async getDelegation(name: string): Promise<Delegation | undefined> {
    const { rows } = await this.pool.query<{ data: Uint8Array }>(sql.getDelegation, [name]);
    return rows[0] && delegationFromRow(rows[0]);
  }

  private static readonly subtreeSql = subtreeSql("", undefined, () => "$1");

  async listDelegationSubtree(name: string, page?: SubtreePage): Promise<SubtreeEntry[]> {
    const args: unknown[] = [];
    const sql = subtreeSql(name, page, (value) => {
      args.push(value);
      return `$${args.length}`;
    });
    const { rows } = await this.pool.query<{ data: Uint8Array; depth: number }>(sql, args);
    return rows.map((row) => ({ delegation: delegationFromRow(row), depth: Number(row.depth) }));
  }

  revokeDelegationSubtree(name: string, time: Date, reason: string, audit?: AuditDraft): Promise<Delegation[]> {
    return this.write((tx) => runAsync(revokeSubtreeSteps(this.rowsOf(tx), name, time, reason, audit)));
  }

  putPolicyBundle(bundle: PolicyBundle, audit?: AuditDraft, key?: RequestKey): Promise<KeyedCreate<PolicyBundle>> {
    const submitted = clone(PolicyBundleSchema, bundle);
    return this.write((tx) => runAsync(putPolicyBundleSteps(this.rowsOf(tx), clone(PolicyBundleSchema, submitted), audit, key)));
  }

  async getPolicyBundle(name: string): Promise<PolicyBundle | undefined> {
    const parsed = parseBundleName(name);
    if (parsed === undefined) return undefined;
    const { rows } = await this.pool.query<{ data: Uint8Array }>(sql.getBundle, [parsed.profileType, parsed.version]);
    return rows[0] && fromBinary(PolicyBundleSchema, rows[0].data);
  }

  async listPolicyBundles(page?: BundlePage): Promise<PolicyBundle[]> {
    const { rows } = await this.pool.query<{ data: Uint8Array }>(
      "SELECT DISTINCT ON (profile_type) data FROM policy_bundles WHERE profile_type > $1 ORDER BY profile_type, version DESC LIMIT $2",
      [page?.after ?? -1, page?.limit ?? null],
    );
    return rows.map((row) => fromBinary(PolicyBundleSchema, row.data));
  }

  putMcpUpstream(upstream: McpUpstream, audit?: AuditDraft): Promise<{ created: boolean }> {
    const submitted = clone(McpUpstreamSchema, upstream);
    return this.write((tx) => runAsync(putMcpUpstreamSteps(this.rowsOf(tx), submitted, audit)));
  }

  deleteMcpUpstream(name: string, audit?: AuditDraft): Promise<McpUpstream | undefined> {
    return this.write((tx) => runAsync(deleteMcpUpstreamSteps(this.rowsOf(tx), name, audit)));
  }

  async listMcpUpstreams(page?: McpUpstreamPage): Promise<McpUpstream[]> {
    const { rows } = await this.pool.query<{ data: Uint8Array }>(sql.listMcpUpstreams, [page?.after ?? "", page?.limit ?? null]);
    return rows.map((row) => fromBinary(McpUpstreamSchema, row.data));
  }

  async mcpUpstreamsVersion(): Promise<bigint> {
    const { rows } = await this.pool.query<{ version: bigint }>(sql.mcpUpstreamsVersion);
    return BigInt(rows[0]!.version);
  }

  appendAudit(draft: AuditDraft): Promise<AuditRecord> {
    return this.write((tx) => tx.appendAudit(draft, ""));
  }

  async auditHead(): Promise<ChainHead | undefined> {
    const { rows } = await this.pool.query<{ sequence: bigint; hash: string }>("SELECT sequence, hash FROM audit_head");
    return chainHead(rows[0]!);
  }

  async listAuditRecords(query: AuditQuery): Promise<AuditRecord[]> {
    const args: unknown[] = [];
    const sql = auditQuerySql(query, (value) => {
      args.push(value);
      return `$${args.length}`;
    });
    const { rows } = await this.pool.query<{ record: string }>(sql, args);
    return rows.map(recordFromRow);
  }

  putAuditCheckpoint(checkpoint: AuditCheckpoint): Promise<void> {
    return this.write(async (tx) => {
      await tx.query(
        `INSERT INTO audit_checkpoints (${CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO NOTHING`,
        checkpointRowValues(checkpoint),
      );
    });
  }

  async listAuditCheckpoints(afterSize: bigint, limit: number): Promise<AuditCheckpoint[]> {
    const { rows } = await this.pool.query<CheckpointRow>(sql.listCheckpoints, [afterSize, limit]);
    return rows.map(checkpointFromRow);
  }

  async latestAuditCheckpoint(): Promise<AuditCheckpoint | undefined> {
    const { rows } = await this.pool.query<CheckpointRow>(sql.latestCheckpoint);
    return rows[0] && checkpointFromRow(rows[0]);
  }

  pruneAuditLog(size: bigint, headHash: string, audit?: AuditDraft): Promise<AuditPruneResult> {
    return this.write((tx) => runAsync(pruneAuditLogSteps(this.rowsOf(tx), size, headHash, audit)));
  }

  /** Delivers nothing more, waits for the writes in flight, then closes every connection. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // First: a writer waiting for its events to be delivered must not hold up the close.
      this.feed.stop();
      await Promise.allSettled([...this.writes]);
      await this.listen.close();
      await this.pool.end();
    })();
    return this.closing;
  }
}
