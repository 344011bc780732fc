// How both stores list a delegation subtree: one recursive query, in one order (depth below the
// root, then name) so that a listing can be paged by position, given a placeholder style.
import type { SubtreePage } from "./store.js";

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
