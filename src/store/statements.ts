// The SQL both stores run where their dialects differ only in placeholders, written once and
// given a placeholder style. What else a dialect needs (PostgreSQL's row locks appended as
// `FOR UPDATE`, SQLite's `INSERT OR IGNORE`, JSON and array operators) stays in its backend.
// Each statement's values are in the order of its placeholders (see operation-rows.ts).
import { CHECKPOINT_COLUMNS } from "./audit-rows.js";
import { OPERATION_COLUMNS } from "./operation-rows.js";

/** The placeholder of the `n`th value (from 1) of a statement. */
export type Placeholder = (n: number) => string;

export const sqlitePlaceholder: Placeholder = () => "?";
export const postgresPlaceholder: Placeholder = (n) => `$${n}`;

/** `count` placeholders from the `from`th on, comma separated. */
function list(p: Placeholder, count: number, from = 1): string {
  return Array.from({ length: count }, (_, i) => p(from + i)).join(", ");
}

/** The statements in a dialect: its placeholders, and how it binds a JSON value (`json`, given the value's placeholder). */
export function statements(p: Placeholder, json: (placeholder: string) => string = (placeholder) => placeholder) {
  return {
    insertOperation: `INSERT INTO operations (${OPERATION_COLUMNS}) VALUES (${list(p, 7)}, ${json(p(8))}, ${p(9)})`,
    getOperation: `SELECT data FROM operations WHERE name = ${p(1)}`,
    stateOf: `SELECT state, data FROM operations WHERE name = ${p(1)}`,
    byRequestId: `SELECT request_digest, data FROM operations WHERE idempotency_scope = ${p(1)} AND request_id = ${p(2)}`,
    updateOperation: `UPDATE operations SET state = ${p(1)}, data = ${p(2)} WHERE name = ${p(3)}`,
    readEvents: `SELECT sequence, profile, operation_type, labels, data, data_form FROM events WHERE sequence > ${p(1)} ORDER BY sequence LIMIT ${p(2)}`,
    getProfile: `SELECT name, profile_type, budget FROM profiles WHERE name = ${p(1)}`,
    getDelegation: `SELECT data FROM delegations WHERE id = ${p(1)}`,
    latestBundleVersion: `SELECT MAX(version) AS version FROM policy_bundles WHERE profile_type = ${p(1)}`,
    insertBundle: `INSERT INTO policy_bundles (profile_type, version, data) VALUES (${list(p, 3)})`,
    getBundle: `SELECT data FROM policy_bundles WHERE profile_type = ${p(1)} AND version = ${p(2)}`,
    getMcpUpstream: `SELECT data FROM mcp_upstreams WHERE name = ${p(1)}`,
    putMcpUpstream: `INSERT INTO mcp_upstreams (name, data) VALUES (${list(p, 2)}) ON CONFLICT (name) DO UPDATE SET data = excluded.data`,
    deleteMcpUpstream: `DELETE FROM mcp_upstreams WHERE name = ${p(1)}`,
    listMcpUpstreams: `SELECT data FROM mcp_upstreams WHERE name > ${p(1)} ORDER BY name LIMIT ${p(2)}`,
    bumpMcpUpstreamsVersion: "UPDATE mcp_upstream_changes SET version = version + 1",
    mcpUpstreamsVersion: "SELECT version FROM mcp_upstream_changes",
    getRequestKey: `SELECT request_digest, resource FROM request_keys WHERE scope = ${p(1)} AND rpc = ${p(2)} AND request_id = ${p(3)}`,
    getSecret: `SELECT value FROM secrets WHERE key = ${p(1)}`,
    heartbeat: `INSERT INTO runners (id, heartbeat_ms) VALUES (${list(p, 2)}) ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms`,
    runnerHeartbeats: "SELECT id, heartbeat_ms FROM runners",
    listCheckpoints: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE size > ${p(1)} ORDER BY size LIMIT ${p(2)}`,
    latestCheckpoint: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY size DESC LIMIT 1`,
    checkpointOfSize: `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE size = ${p(1)}`,
    firstAudit: "SELECT MIN(sequence) AS first FROM audit_records",
    auditHashAt: `SELECT hash FROM audit_records WHERE sequence = ${p(1)}`,
    deleteAuditUpTo: `DELETE FROM audit_records WHERE sequence <= ${p(1)}`,
    deleteCheckpointsBefore: `DELETE FROM audit_checkpoints WHERE size < ${p(1)}`,
    insertOutputChunk: `INSERT INTO output_chunks (operation, attempt, stream, start_offset, data) VALUES (${list(p, 5)})`,
    deleteOutputChunks: `DELETE FROM output_chunks WHERE (operation, attempt, stream) IN (SELECT operation, attempt, stream FROM output_streams WHERE updated_ms < ${p(1)})`,
    deleteOutputStreams: `DELETE FROM output_streams WHERE updated_ms < ${p(1)}`,
  };
}
