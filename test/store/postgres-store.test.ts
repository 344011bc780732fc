// The PostgreSQL store passes the same conformance suite, on a real throwaway cluster (a database
// per test; reopen is a new PostgresStore on the same database, as another replica would be).
// Plus what only a shared database has: replicas appending to one audit chain at once.
import { expect, it } from "vitest";
import { PostgresStore } from "../../src/store/postgres/postgres-store.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { auditDraft, expectWholeChain, operation, storeConformance } from "./conformance.js";

const { database } = clusterForFile();

storeConformance("PostgreSQL", async () => {
  const url = await database("conformance");
  return { store: await PostgresStore.open(url), reopen: () => PostgresStore.open(url) };
});

it("keeps one gapless audit chain when two replicas append at once", async () => {
  const url = await database("audit_replicas");
  const replicas = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
  try {
    const appends = 200;
    await Promise.all(
      Array.from({ length: appends }, (_, i) => {
        const store = replicas[i % 2]!;
        // Plain appends and audited creates, which take the event counter's lock before the audit head's.
        return i % 3 === 0 ? store.createOperation({ operation: operation(), requestDigest: "d", audit: auditDraft({ principal: `p${i}` }) }) : store.appendAudit(auditDraft({ principal: `p${i}` }));
      }),
    );
    const records = await replicas[1]!.listAuditRecords({ afterSequence: 0n, limit: 1000 });
    expect(records).toHaveLength(appends);
    expectWholeChain(records);
    expect(new Set(records.map((r) => r.principal)).size).toBe(appends);
    expect(await replicas[0]!.auditHead()).toEqual({ sequence: BigInt(appends), hash: records[appends - 1]!.hash });
  } finally {
    await Promise.all(replicas.map((store) => store.close()));
  }
});
