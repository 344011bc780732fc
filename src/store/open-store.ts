// Chooses the store behind the server: `config.store` (from `amctl serve --store` or AMCTL_STORE)
// names a PostgreSQL database by URL; unset or `sqlite` is the embedded SQLite file in the data dir.
import { PostgresStore } from "./postgres/postgres-store.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import type { OperationStore } from "./store.js";
import { tracedStore } from "./traced-store.js";

export async function openStore(config: { store?: string }, dataDir: string): Promise<OperationStore> {
  const store = config.store?.trim();
  if (store === undefined || store === "" || store === "sqlite") return tracedStore(new SqliteStore(dataDir), "sqlite");
  if (/^postgres(ql)?:\/\//i.test(store)) return tracedStore(await PostgresStore.open(store), "postgresql");
  // Only the scheme in the message: the rest may hold a password.
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(store)?.[1];
  throw new Error(
    `the store must be "sqlite" or a postgres:// URL, got ${scheme ? `a ${scheme}: URL` : `"${store.length > 40 ? `${store.slice(0, 40)}…` : store}"`}`,
  );
}
