// The PostgreSQL store passes the same conformance suite, on a real throwaway cluster (a database
// per test; reopen is a new PostgresStore on the same database, as another replica would be).
import { PostgresStore } from "../../src/store/postgres/postgres-store.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { storeConformance } from "./conformance.js";

const { database } = clusterForFile();

storeConformance("PostgreSQL", async () => {
  const url = await database("conformance");
  return { store: await PostgresStore.open(url), reopen: () => PostgresStore.open(url) };
});
