// How both stores keep delegations: their rows, and their subtrees listed by one recursive query,
// in one order (depth below the root, then name) so that a listing can be paged by position,
// given a placeholder style, and revoked parents first.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DelegationSchema, type Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import type { SubtreePage } from "./store.js";

/** The values of a delegation's row (id, parent, expire_ms, data); expire_ms is 0 for a delegation without expiry. */
export function delegationRowValues(delegation: Delegation): [string, string | null, number, Uint8Array] {
  const expireMs = delegation.expireTime ? Number(delegation.expireTime.seconds) * 1000 : 0;
  return [delegation.name, delegation.parent || null, expireMs, toBinary(DelegationSchema, delegation)];
}

export function delegationFromRow(row: { data: Uint8Array }): Delegation {
  return fromBinary(DelegationSchema, row.data);
}

/**
 * The delegations of a subtree listing (`rows`, in its order: parents first) that a revocation
 * at `time` revokes, each with its new form: those not revoked yet.
 */
export function revocations(
  rows: readonly { id: string; revoked: boolean | bigint | number; data: Uint8Array }[],
  time: Date,
  reason: string,
): { id: string; delegation: Delegation }[] {
  return rows
    .filter((row) => !row.revoked)
    .map((row) => {
      const delegation = delegationFromRow(row);
      delegation.revokeTime = timestampFromDate(time);
      delegation.revokeReason = reason;
      return { id: row.id, delegation };
    });
}

/**
 * The SELECT of `root`'s subtree (`id`, `revoked`, `data`, `depth`), with its values passed
 * through `arg` (which returns the dialect's placeholder for each, in order of use).
 */
export function subtreeSql(root: string, page: SubtreePage | undefined, arg: (value: unknown) => string): string {
  const where: string[] = [];
  const rootArg = arg(root);
  if (page?.after !== undefined) {
    where.push(`(s.depth > ${arg(page.after.depth)} OR (s.depth = ${arg(page.after.depth)} AND d.id > ${arg(page.after.name)}))`);
  }
  // expire_ms is 0 for a delegation without expiry.
  if (page?.activeAt !== undefined) where.push(`NOT d.revoked AND (d.expire_ms = 0 OR d.expire_ms > ${arg(page.activeAt.getTime())})`);
  return `
    WITH RECURSIVE subtree(id, depth) AS (
      SELECT id, 0 FROM delegations WHERE id = ${rootArg}
      UNION ALL
      SELECT d.id, s.depth + 1 FROM delegations d JOIN subtree s ON d.parent = s.id
    )
    SELECT d.id, d.revoked, d.data, s.depth FROM delegations d JOIN subtree s ON d.id = s.id
    ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY s.depth, d.id${page !== undefined ? ` LIMIT ${arg(page.limit)}` : ""}`;
}
