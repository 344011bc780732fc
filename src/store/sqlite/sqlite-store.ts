// The embedded default store: one SQLite file in the data dir, WAL with synchronous=FULL, so a
// write is on disk when its promise resolves; writes are group-committed (group-commit.ts).
// A single connection is the single writer, so commit order and sequence order always agree.
import { decodeOperation } from "../stored-messages.js";
import { chmodSync, existsSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { EventPageReader } from "./page-reader.js";
import { eventBoundsOf, LATEST_EVENT_SQL, OLDEST_EVENT_SQL, type LatestEventRow, type OldestEventRow } from "./event-bounds.js";
import { clone, fromBinary, toBinary } from "@bufbuild/protobuf";
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
  Modification,
  ModifyResult,
  EventBounds,
  EventPage,
  EventPageQuery,
  KeyedCreate,
  McpUpstreamPage,
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
  eventFromRow,
  type EventRow,
  eventRowValues,
  operationRowValues,
  operationUpdateValues,
  profileFromRow,
} from "../operation-rows.js";
import { sqlitePlaceholder, statements } from "../statements.js";
import { eventPageStatement, sqliteOneOf } from "../event-page.js";
import { runSync, type Steps } from "../steps.js";
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
import { GroupCommit } from "./group-commit.js";
import { appendResult, outputRead } from "../output-rows.js";
import { migrations } from "./migrations.js";

/** How many replays' page statements the page thread keeps prepared: each filter shape (how many profiles, operations, … it names) is one. */
const PAGE_STATEMENTS = 64;

export const SQLITE_FILE = "amctl.sqlite";

const sql = statements(sqlitePlaceholder);

function migrate(db: Database.Database): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
  const applied = new Set((db.prepare("SELECT version FROM schema_migrations").all() as { version: bigint }[]).map((r) => Number(r.version)));
  for (const migration of migrations) {
    if (applied.has(migration.version)) continue;
    db.transaction(() => {
      db.exec(migration.sql);
      db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(migration.version, new Date().toISOString());
    })();
  }
}

function placeholders(values: readonly unknown[]): string {
  return values.map(() => "?").join(", ");
}

/** A JSON path for one label key; keys are validated identifiers, quoting keeps dots literal. */
function labelPath(key: string): string {
  return `$."${key.replaceAll('"', "")}"`;
}

export class SqliteStore implements OperationStore {
  /** One data dir, one server process. */
  readonly exclusive = true;
  private readonly db: Database.Database;
  private readonly commits: GroupCommit;
  private readonly listeners: ((events: StoredEvent[]) => void)[] = [];
  private pendingEvents: StoredEvent[] = [];
  private readonly auditListeners: ((sequence: bigint) => void)[] = [];
  private readonly outputListeners: ((key: OutputKey) => void)[] = [];
  /** The last audit record the batch being committed appended, if any. */
  private auditAppended: bigint | undefined;
  private readonly statements;
  private readonly rows: WriteRows;
  private readonly pages: EventPageReader;

  constructor(dataDir: string) {
    this.db = new Database(join(dataDir, SQLITE_FILE));
    this.pages = new EventPageReader({ file: join(dataDir, SQLITE_FILE), statementsKept: PAGE_STATEMENTS });
    this.db.pragma("journal_mode = WAL");
    // The store is the server's alone, whatever the umask: no other user reads it, even one
    // that may traverse the data dir to reach a workspace (sandbox.ts).
    for (const suffix of ["", "-wal", "-shm"]) {
      if (existsSync(join(dataDir, SQLITE_FILE + suffix))) chmodSync(join(dataDir, SQLITE_FILE + suffix), 0o600);
    }
    this.db.pragma("synchronous = FULL");
    this.db.pragma("busy_timeout = 5000");
    this.db.defaultSafeIntegers(true);
    migrate(this.db);
    this.commits = new GroupCommit(this.db, (committed) => this.afterBatch(committed));
    this.statements = {
      insertOperation: this.db.prepare(sql.insertOperation),
      byRequestId: this.db.prepare(sql.byRequestId),
      getOperation: this.db.prepare(sql.getOperation),
      stateOf: this.db.prepare(sql.stateOf),
      updateOperation: this.db.prepare(sql.updateOperation),
      insertProfile: this.db.prepare("INSERT OR IGNORE INTO profiles (name, profile_type, operation, budget) VALUES (?, ?, ?, ?)"),
      getProfile: this.db.prepare(sql.getProfile),
      getHeld: this.db.prepare("SELECT held FROM budget_accounts WHERE account = ?"),
      putHeld: this.db.prepare("INSERT INTO budget_accounts (account, held) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET held = excluded.held"),
      insertReservation: this.db.prepare("INSERT INTO reservations (operation, accounts, amount) VALUES (?, ?, ?)"),
      getReservation: this.db.prepare("SELECT accounts, amount FROM reservations WHERE operation = ?"),
      deleteReservation: this.db.prepare("DELETE FROM reservations WHERE operation = ?"),
      runningUnder: this.db.prepare(`
        SELECT COUNT(*) AS n FROM reservations r JOIN operations o ON o.name = r.operation
        WHERE o.state = ? AND EXISTS (SELECT 1 FROM json_each(r.accounts) WHERE value = ?)`),
      insertOnceKey: this.db.prepare("INSERT OR IGNORE INTO once_keys (key) VALUES (?)"),
      latestBundleVersion: this.db.prepare(sql.latestBundleVersion),
      insertBundle: this.db.prepare(sql.insertBundle),
      getBundle: this.db.prepare(sql.getBundle),
      insertRequestKey: this.db.prepare(`INSERT INTO request_keys (${REQUEST_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?)`),
      getRequestKey: this.db.prepare(sql.getRequestKey),
      getMcpUpstream: this.db.prepare(sql.getMcpUpstream),
      putMcpUpstream: this.db.prepare(sql.putMcpUpstream),
      deleteMcpUpstream: this.db.prepare(sql.deleteMcpUpstream),
      listMcpUpstreams: this.db.prepare(sql.listMcpUpstreams),
      bumpMcpUpstreamsVersion: this.db.prepare(sql.bumpMcpUpstreamsVersion),
      mcpUpstreamsVersion: this.db.prepare(sql.mcpUpstreamsVersion),
      latestBundles: this.db.prepare(`
        SELECT data FROM policy_bundles p
        WHERE version = (SELECT MAX(version) FROM policy_bundles q WHERE q.profile_type = p.profile_type) AND profile_type > ?
        ORDER BY profile_type LIMIT ?`),
      insertEvent: this.db.prepare(`INSERT INTO events (${EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      readEvents: this.db.prepare(sql.readEvents),
      oldestEvent: this.db.prepare(OLDEST_EVENT_SQL),
      latestEvent: this.db.prepare(LATEST_EVENT_SQL),
      activeOperations: this.db.prepare(`SELECT data FROM operations WHERE state NOT IN (${placeholders(TERMINAL_STATES)}) ORDER BY name`),
      insertDelegation: this.db.prepare("INSERT OR IGNORE INTO delegations (id, parent, expire_ms, data) VALUES (?, ?, ?, ?)"),
      getDelegation: this.db.prepare(sql.getDelegation),
      delegationChildren: this.db.prepare("SELECT data FROM delegations WHERE parent = ?"),
      delegationSubtree: this.db.prepare(subtreeSql("", undefined, () => "?")),
      revokeDelegation: this.db.prepare("UPDATE delegations SET revoked = 1, data = ? WHERE id = ?"),
      getSecret: this.db.prepare(sql.getSecret),
      insertSecret: this.db.prepare("INSERT OR IGNORE INTO secrets (key, value) VALUES (?, ?)"),
      auditHead: this.db.prepare("SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1"),
      insertAudit: this.db.prepare(`INSERT INTO audit_records (${AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
      insertCheckpoint: this.db.prepare(`INSERT OR IGNORE INTO audit_checkpoints (${CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)`),
      listCheckpoints: this.db.prepare(sql.listCheckpoints),
      latestCheckpoint: this.db.prepare(sql.latestCheckpoint),
      checkpointOfSize: this.db.prepare(sql.checkpointOfSize),
      firstAudit: this.db.prepare(sql.firstAudit),
      auditHashAt: this.db.prepare(sql.auditHashAt),
      deleteAuditUpTo: this.db.prepare(sql.deleteAuditUpTo),
      deleteCheckpointsBefore: this.db.prepare(sql.deleteCheckpointsBefore),
      outputState: this.db.prepare("SELECT size, ended, truncated FROM output_streams WHERE operation = ? AND attempt = ? AND stream = ?"),
      putOutputState: this.db.prepare(
        "INSERT INTO output_streams (operation, attempt, stream, size, ended, truncated, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (operation, attempt, stream) DO UPDATE SET size = excluded.size, ended = excluded.ended, truncated = excluded.truncated, updated_ms = excluded.updated_ms",
      ),
      insertOutputChunk: this.db.prepare(sql.insertOutputChunk),
      // From the chunk that holds `from` (the last one starting at or before it) on.
      readOutputChunks: this.db.prepare(`
        SELECT start_offset, data FROM output_chunks WHERE operation = @operation AND attempt = @attempt AND stream = @stream
        AND start_offset >= COALESCE((SELECT MAX(start_offset) FROM output_chunks WHERE operation = @operation AND attempt = @attempt AND stream = @stream AND start_offset <= @from), 0)
        ORDER BY start_offset LIMIT @limit`),
      deleteOutputChunks: this.db.prepare(sql.deleteOutputChunks),
      deleteOutputStreams: this.db.prepare(sql.deleteOutputStreams),
    };
    this.rows = this.writeRows();
  }

  onCommit(listener: (events: StoredEvent[]) => void): void {
    this.listeners.push(listener);
  }

  /** A file in the data dir is never unavailable while the server runs. */
  onAvailability(): void {}

  onAuditAppend(listener: (sequence: bigint) => void): void {
    this.auditListeners.push(listener);
  }

  /** Publishes a batch's events once it is durable; drops them if it rolled back. */
  private afterBatch(committed: boolean): void {
    const events = this.pendingEvents;
    const auditAppended = this.auditAppended;
    this.pendingEvents = [];
    this.auditAppended = undefined;
    // A write whose savepoint rolled back may have set auditAppended: a spurious wake-up is harmless.
    if (committed && auditAppended !== undefined) for (const listener of this.auditListeners) listener(auditAppended);
    if (!committed || events.length === 0) return;
    for (const listener of this.listeners) listener(events);
  }

  /**
   * Seals `draft` onto the head inside the current transaction. The head is read from the table,
   * not cached: a savepoint that rolls back takes its record with it.
   */
  private appendAuditNow(draft: AuditDraft, actedOn: string): AuditRecord {
    const head = this.statements.auditHead.get() as ChainHead | undefined;
    const sealed = sealDraft(draft, head && { sequence: BigInt(head.sequence), hash: head.hash }, actedOn);
    const { record } = sealed;
    this.statements.insertAudit.run(...auditRowValues(sealed));
    this.auditAppended = record.sequence;
    return record;
  }

  /** Appends an event inside the current transaction; returns it with its sequence (`publishing` passes it on once the write returned). */
  private appendEvent(operation: Operation, event: OperationEvent): StoredEvent {
    const result = this.statements.insertEvent.run(...eventRowValues(operation, event));
    return appendedEvent(operation, event, BigInt(result.lastInsertRowid));
  }

  createOperation(input: NewOperation): Promise<CreateResult> {
    // Snapshot now: the caller may go on changing its object before the batch commits.
    const operation = clone(OperationSchema, input.operation);
    return this.commits.submit(() => this.publishing(createOperationSteps(this.rows, input, operation)));
  }

  updateOperation(update: OperationUpdate): Promise<UpdateResult> {
    const operation = clone(OperationSchema, update.operation);
    return this.commits.submit(() => this.publishing(updateOperationSteps(this.rows, update, operation)));
  }

  modifyOperation(name: string, modify: Modification, onceKey?: string, audit?: AuditDraft): Promise<ModifyResult> {
    return this.commits.submit(() => this.publishing(modifyOperationSteps(this.rows, name, modify, onceKey, audit)));
  }

  claimOperation(name: string, slots: readonly SlotKey[], modify: Modification): Promise<ClaimResult> {
    return this.commits.submit(() => this.publishing(claimOperationSteps(this.rows, name, slots, modify)));
  }

  /**
   * Runs a write's steps in the current transaction and keeps the event it appended for the
   * batch's listeners: only once the write returned, since a write whose savepoint rolls back
   * never committed its event.
   */
  private publishing<T extends CreateResult | UpdateResult | ClaimResult>(steps: Steps<T>): T {
    const result = runSync(steps);
    if ("event" in result && result.event !== undefined) this.pendingEvents.push(result.event);
    return result;
  }

  private held(account: string): Budget {
    const row = this.statements.getHeld.get(account) as { held: Uint8Array } | undefined;
    return budgetFromColumn(row?.held);
  }

  private accountState(account: string, children = true): AccountState {
    const childAccounts =
      children && account.startsWith("delegations/")
        ? (this.statements.delegationChildren.all(account) as { data: Uint8Array }[]).map((row) => {
            const delegation = delegationFromRow(row);
            return { delegation, held: this.held(delegation.name) };
          })
        : [];
    return { account, held: this.held(account), children: childAccounts };
  }

  /** The shared writes' statements (write-steps.ts). One connection is the only writer: what a write reads stays as read until it commits, without locks. */
  private writeRows(): WriteRows {
    const statements = this.statements;
    return {
      byRequestId: (scope, requestId) => statements.byRequestId.get(scope, requestId) as { request_digest: string; data: Uint8Array } | undefined,
      insertProfile: (values) => statements.insertProfile.run(...values).changes > 0,
      lockAccounts: (accounts, children) => new Map(accounts.map((account) => [account, this.accountState(account, children)])),
      putHeld: (held) => {
        for (const [account, budget] of held) statements.putHeld.run(account, budgetColumn(budget));
      },
      insertReservation: (operation, accounts, amount) => statements.insertReservation.run(operation, JSON.stringify(accounts), budgetColumn(amount)),
      takeReservation: (operation) => {
        const row = statements.getReservation.get(operation) as { accounts: string; amount: Uint8Array } | undefined;
        if (row === undefined) return undefined;
        statements.deleteReservation.run(operation);
        return { accounts: JSON.parse(row.accounts) as string[], amount: budgetFromColumn(row.amount) };
      },
      appendEvent: (operation, event) => this.appendEvent(operation, event),
      insertOperation: (input, operation) => statements.insertOperation.run(...operationRowValues(input, operation)),
      lockOperation: (name) => statements.stateOf.get(name) as { state: bigint; data: Uint8Array } | undefined,
      writeOperation: (operation) => statements.updateOperation.run(...operationUpdateValues(operation)),
      recordOnceKey: (key) => statements.insertOnceKey.run(key).changes > 0,
      lockClaim: () => undefined,
      runningUnder: (key) => BigInt((statements.runningUnder.get(TaskState.RUNNING, key) as { n: bigint }).n),
      lockSubtree: (name) => statements.delegationSubtree.all(name) as { id: string; revoked: bigint; data: Uint8Array }[],
      writeRevoked: (id, delegation) => statements.revokeDelegation.run(toBinary(DelegationSchema, delegation), id),
      appendAudit: (draft, actedOn) => this.appendAuditNow(draft, actedOn),
      lockParent: (parent) => this.accountState(parent),
      insertDelegation: (delegation) => statements.insertDelegation.run(...delegationRowValues(delegation)),
      takeKey: (key, resource) => {
        const row = statements.getRequestKey.get(key.scope, key.rpc, key.requestId) as RequestKeyRow | undefined;
        if (row !== undefined) return takenKey(key, row);
        statements.insertRequestKey.run(...requestKeyValues(key, resource));
        return undefined;
      },
      lockBundleVersions: () => undefined,
      latestBundleVersion: (profileType) => (statements.latestBundleVersion.get(profileType) as { version: bigint | null }).version,
      insertBundle: (bundle) => statements.insertBundle.run(...bundleRowValues(bundle)),
      lockMcpUpstreams: () => undefined,
      getMcpUpstream: (name) => (statements.getMcpUpstream.get(name) as { data: Uint8Array } | undefined)?.data,
      putMcpUpstream: (name, data) => statements.putMcpUpstream.run(name, data),
      deleteMcpUpstream: (name) => statements.deleteMcpUpstream.run(name),
      bumpMcpUpstreamsVersion: () => statements.bumpMcpUpstreamsVersion.run(),
      lockAuditHead: () => undefined,
      checkpointOfSize: (size) => statements.checkpointOfSize.get(size) as CheckpointRow | undefined,
      firstAudit: () => (statements.firstAudit.get() as { first: bigint | null }).first,
      auditHashAt: (sequence) => (statements.auditHashAt.get(sequence) as { hash: string } | undefined)?.hash,
      deleteAuditUpTo: (size) => {
        const { changes } = statements.deleteAuditUpTo.run(size);
        statements.deleteCheckpointsBefore.run(size);
        return changes;
      },
      lockOutputState: (key) => this.outputStateOf(key),
      insertOutputChunk: ({ operation, attempt, stream }, offset, data) => statements.insertOutputChunk.run(operation, attempt, stream, offset, data),
      writeOutputState: ({ operation, attempt, stream }, _existed, { size, ended, truncated }, timeMs) =>
        statements.putOutputState.run(operation, attempt, stream, size, ended ? 1 : 0, truncated ? 1 : 0, timeMs),
    };
  }

  heartbeat(runner: string, at: Date): Promise<void> {
    return this.commits.submit(() => {
      this.db.prepare(sql.heartbeat).run(runner, at.getTime());
    });
  }

  async runnerHeartbeats(): Promise<Map<string, Date>> {
    const rows = this.db.prepare(sql.runnerHeartbeats).all() as { id: string; heartbeat_ms: bigint }[];
    return new Map(rows.map((row) => [row.id, new Date(Number(row.heartbeat_ms))]));
  }

  async readAccounts(accounts: readonly string[]): Promise<AccountState[]> {
    return accounts.map((account) => this.accountState(account));
  }

  async getOperation(name: string): Promise<Operation | undefined> {
    const row = this.statements.getOperation.get(name) as { data: Uint8Array } | undefined;
    return row && decodeOperation(row.data);
  }

  async findByRequestId(scope: string, requestId: string): Promise<{ operation: Operation; requestDigest: string } | undefined> {
    const row = this.statements.byRequestId.get(scope, requestId) as { request_digest: string; data: Uint8Array } | undefined;
    return row && { operation: decodeOperation(row.data), requestDigest: row.request_digest };
  }

  async getProfile(name: string): Promise<StoredProfile | undefined> {
    const row = this.statements.getProfile.get(name) as { name: string; profile_type: bigint; budget: Uint8Array | null } | undefined;
    return row && profileFromRow(row);
  }

  async listOperations(query: OperationQuery): Promise<Operation[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (query.types?.length) {
      where.push(`type IN (${placeholders(query.types)})`);
      args.push(...query.types);
    }
    if (query.states?.length) {
      where.push(`state IN (${placeholders(query.states)})`);
      args.push(...query.states);
    }
    if (query.profile) {
      where.push("profile = ?");
      args.push(query.profile);
    }
    if (query.profiles !== undefined) {
      where.push(query.profiles.length ? `profile IN (${placeholders(query.profiles)})` : "0");
      args.push(...query.profiles);
    }
    for (const [key, value] of Object.entries(query.labels ?? {})) {
      where.push("json_extract(labels, ?) = ?");
      args.push(labelPath(key), value);
    }
    if (query.beforeName) {
      where.push("name < ?");
      args.push(query.beforeName);
    }
    const sql = `SELECT data FROM operations ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY name DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, query.limit) as { data: Uint8Array }[];
    return rows.map((row) => decodeOperation(row.data));
  }

  async listActiveOperations(): Promise<Operation[]> {
    const rows = this.statements.activeOperations.all(...TERMINAL_STATES) as { data: Uint8Array }[];
    return activeOperations(rows);
  }

  async readEvents(after: bigint, limit: number): Promise<StoredEvent[]> {
    return (this.statements.readEvents.all(after, limit) as EventRow[]).map(eventFromRow);
  }

  readEventPage(query: EventPageQuery): Promise<EventPage> {
    const { sql, values } = eventPageStatement(sqlitePlaceholder, sqliteOneOf, query);
    return this.pages.read(sql, values);
  }

  async eventBounds(): Promise<EventBounds> {
    return this.bounds();
  }

  private bounds(): EventBounds {
    return eventBoundsOf(this.statements.oldestEvent.get() as OldestEventRow, this.statements.latestEvent.get() as LatestEventRow | undefined);
  }

  compactEvents(policy: RetentionPolicy, now: Date): Promise<number> {
    return this.commits.submit(() => {
      const { latest } = this.bounds();
      const result = this.db
        .prepare("DELETE FROM events WHERE sequence <= ? OR time_ms < ?")
        .run(latest - BigInt(policy.maxEvents), now.getTime() - policy.maxAgeMs);
      return result.changes;
    });
  }

  private outputStateOf(key: OutputKey): OutputState | undefined {
    const row = this.statements.outputState.get(key.operation, key.attempt, key.stream) as { size: bigint; ended: bigint; truncated: bigint } | undefined;
    return row && { size: BigInt(row.size), ended: row.ended !== 0n, truncated: row.truncated !== 0n };
  }

  async appendOutput(append: OutputAppend): Promise<OutputAppendResult> {
    const plan = await this.commits.submit(() => runSync(appendOutputSteps(this.rows, append)));
    if (plan.kind === "write")
      for (const listener of this.outputListeners) listener({ operation: append.operation, attempt: append.attempt, stream: append.stream });
    return appendResult(plan);
  }

  async readOutput(key: OutputKey, from: bigint, limit: number): Promise<OutputRead> {
    // One synchronous read: the state and the chunks are of the same moment.
    const state = this.outputStateOf(key);
    const rows = this.statements.readOutputChunks.all({ ...key, from, limit }) as { start_offset: bigint; data: Uint8Array }[];
    return outputRead(rows, from, state);
  }

  compactOutput(before: Date): Promise<number> {
    return this.commits.submit(() => {
      this.statements.deleteOutputChunks.run(before.getTime());
      return this.statements.deleteOutputStreams.run(before.getTime()).changes;
    });
  }

  onOutput(listener: (key: OutputKey) => void): void {
    this.outputListeners.push(listener);
  }

  putDelegation(delegation: Delegation): Promise<Delegation> {
    const stored = clone(DelegationSchema, delegation);
    return this.commits.submit(() => {
      this.statements.insertDelegation.run(...delegationRowValues(stored));
      return delegationFromRow(this.statements.getDelegation.get(stored.name) as { data: Uint8Array });
    });
  }

  putChildDelegation(
    child: Delegation,
    check: (siblings: ChildAccount[], parentHeld: Budget) => Error | undefined,
    audit?: AuditDraft,
    key?: RequestKey,
  ): Promise<KeyedCreate<Delegation>> {
    const stored = clone(DelegationSchema, child);
    return this.commits.submit(() => runSync(putChildDelegationSteps(this.rows, stored, check, audit, key)));
  }

  async getDelegation(name: string): Promise<Delegation | undefined> {
    const row = this.statements.getDelegation.get(name) as { data: Uint8Array } | undefined;
    return row && delegationFromRow(row);
  }

  async listDelegationSubtree(name: string, page?: SubtreePage): Promise<SubtreeEntry[]> {
    const args: unknown[] = [];
    const sql = subtreeSql(name, page, (value) => {
      args.push(value);
      return "?";
    });
    const rows = this.db.prepare(sql).all(...args) as { data: Uint8Array; depth: bigint }[];
    return rows.map((row) => ({ delegation: delegationFromRow(row), depth: Number(row.depth) }));
  }

  revokeDelegationSubtree(name: string, time: Date, reason: string, audit?: AuditDraft): Promise<Delegation[]> {
    return this.commits.submit(() => runSync(revokeSubtreeSteps(this.rows, name, time, reason, audit)));
  }

  putPolicyBundle(bundle: PolicyBundle, audit?: AuditDraft, key?: RequestKey): Promise<KeyedCreate<PolicyBundle>> {
    const stored = clone(PolicyBundleSchema, bundle);
    return this.commits.submit(() => runSync(putPolicyBundleSteps(this.rows, stored, audit, key)));
  }

  async getPolicyBundle(name: string): Promise<PolicyBundle | undefined> {
    const parsed = parseBundleName(name);
    const row = parsed && (this.statements.getBundle.get(parsed.profileType, parsed.version) as { data: Uint8Array } | undefined);
    return row ? fromBinary(PolicyBundleSchema, row.data) : undefined;
  }

  async listPolicyBundles(page?: BundlePage): Promise<PolicyBundle[]> {
    const rows = this.statements.latestBundles.all(page?.after ?? -1, page?.limit ?? -1) as { data: Uint8Array }[];
    return rows.map((row) => fromBinary(PolicyBundleSchema, row.data));
  }

  putMcpUpstream(upstream: McpUpstream, audit?: AuditDraft): Promise<{ created: boolean }> {
    const stored = clone(McpUpstreamSchema, upstream);
    return this.commits.submit(() => runSync(putMcpUpstreamSteps(this.rows, stored, audit)));
  }

  deleteMcpUpstream(name: string, audit?: AuditDraft): Promise<McpUpstream | undefined> {
    return this.commits.submit(() => runSync(deleteMcpUpstreamSteps(this.rows, name, audit)));
  }

  async listMcpUpstreams(page?: McpUpstreamPage): Promise<McpUpstream[]> {
    const rows = this.statements.listMcpUpstreams.all(page?.after ?? "", page?.limit ?? -1) as { data: Uint8Array }[];
    return rows.map((row) => fromBinary(McpUpstreamSchema, row.data));
  }

  async mcpUpstreamsVersion(): Promise<bigint> {
    return BigInt((this.statements.mcpUpstreamsVersion.get() as { version: bigint }).version);
  }

  async getOrCreateSecret(key: string, create: () => string): Promise<string> {
    return this.commits.submit(() => {
      this.statements.insertSecret.run(key, create());
      return (this.statements.getSecret.get(key) as { value: string }).value;
    });
  }

  appendAudit(draft: AuditDraft): Promise<AuditRecord> {
    return this.commits.submit(() => this.appendAuditNow(draft, ""));
  }

  async auditHead(): Promise<ChainHead | undefined> {
    const head = this.statements.auditHead.get() as ChainHead | undefined;
    return head && { sequence: BigInt(head.sequence), hash: head.hash };
  }

  async listAuditRecords(query: AuditQuery): Promise<AuditRecord[]> {
    const args: unknown[] = [];
    const sql = auditQuerySql(query, (value) => {
      args.push(value);
      return "?";
    });
    return (this.db.prepare(sql).all(...args) as { record: string }[]).map(recordFromRow);
  }

  putAuditCheckpoint(checkpoint: AuditCheckpoint): Promise<void> {
    return this.commits.submit(() => {
      this.statements.insertCheckpoint.run(...checkpointRowValues(checkpoint));
    });
  }

  async listAuditCheckpoints(afterSize: bigint, limit: number): Promise<AuditCheckpoint[]> {
    return (this.statements.listCheckpoints.all(afterSize, limit) as CheckpointRow[]).map(checkpointFromRow);
  }

  async latestAuditCheckpoint(): Promise<AuditCheckpoint | undefined> {
    const row = this.statements.latestCheckpoint.get() as CheckpointRow | undefined;
    return row && checkpointFromRow(row);
  }

  pruneAuditLog(size: bigint, headHash: string, audit?: AuditDraft): Promise<AuditPruneResult> {
    return this.commits.submit(() => runSync(pruneAuditLogSteps(this.rows, size, headHash, audit)));
  }

  /** Runs SQLite's own consistency check; "ok" when the file is sound. */
  integrityCheck(): string {
    return String(this.db.pragma("integrity_check", { simple: true }));
  }

  async close(): Promise<void> {
    // Let a batch already scheduled for this turn commit first.
    await this.commits.submit(() => undefined);
    await this.pages.close();
    this.db.close();
  }
}
