// The PostgreSQL store passes the same conformance suite, on a real throwaway cluster (a database
// per test; reopen is a new PostgresStore on the same database, as another replica would be).
// Plus what only a shared database has: replicas appending to one audit chain at once; and the
// upgrade of a database an older schema made.
import { toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { expect, it } from "vitest";
import { OperationSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { migrations } from "../../src/store/postgres/migrations.js";
import { PostgresStore } from "../../src/store/postgres/postgres-store.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { auditDraft, expectLegacyEventsSelectedAsMaybe, expectLegacyRow, expectWholeChain, operation, SCOPE, storeConformance } from "./conformance.js";

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
        return i % 3 === 0
          ? store.createOperation({ idempotencyScope: SCOPE, operation: operation(), requestDigest: "d", audit: auditDraft({ principal: `p${i}` }) })
          : store.appendAudit(auditDraft({ principal: `p${i}` }));
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

it("upgrades a database whose request ids were unique across the store: its rows keep working in the legacy scope", async () => {
  const url = await database("legacy_scope");
  const client = new pg.Client(url);
  await client.connect();
  const old = operation();
  try {
    await client.query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)");
    const scoped = migrations.find((migration) => migration.sql.includes("idempotency_scope"))!.version;
    for (const migration of migrations.filter((m) => m.version < scoped)) {
      await client.query(migration.sql);
      await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", [migration.version]);
    }
    await client.query(
      "INSERT INTO operations (name, request_id, request_digest, type, state, profile, labels, data) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
      [old.name, old.requestId, "before", old.type, old.state, old.profile, JSON.stringify(old.labels), toBinary(OperationSchema, old)],
    );
  } finally {
    await client.end();
  }
  const store = await PostgresStore.open(url);
  try {
    await expectLegacyRow(store, old, "before");
  } finally {
    await store.close();
  }
});

it("selects event rows written before the type and state columns as maybe in a typed page", async () => {
  const url = await database("legacy_events");
  const store = await PostgresStore.open(url);
  try {
    await expectLegacyEventsSelectedAsMaybe(store, async () => {
      const client = new pg.Client(url);
      await client.connect();
      await client.query("UPDATE events SET event_type = NULL, state = NULL, data_form = 0").finally(() => client.end());
    });
  } finally {
    await store.close();
  }
});
