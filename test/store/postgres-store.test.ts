// The PostgreSQL store passes the same conformance suite, on a real throwaway cluster (a database
// per test; reopen is a new PostgresStore on the same database, as another replica would be).
import { afterAll, beforeAll } from "vitest";
import { PostgresStore } from "../../src/store/postgres/postgres-store.js";
import { startPostgresCluster, type PostgresCluster } from "../helpers/postgres.js";
import { storeConformance } from "./conformance.js";

let cluster: Promise<PostgresCluster> | undefined;

// Long enough for apt-get to install PostgreSQL on a machine that lacks it. A cluster that cannot
// be had is not this hook's failure but every test's (in `open`): a failing hook would leave the
// tests reported as skipped, and a missing database must fail the suite, never skip it.
beforeAll(async () => {
  cluster = startPostgresCluster();
  await cluster.catch(() => undefined);
}, 600_000);

afterAll(async () => {
  await (await cluster?.catch(() => undefined))?.stop();
});

storeConformance("PostgreSQL", async () => {
  if (cluster === undefined) throw new Error("the PostgreSQL cluster was never started");
  const url = await (await cluster).createDatabase("conformance");
  return { store: await PostgresStore.open(url), reopen: () => PostgresStore.open(url) };
});
