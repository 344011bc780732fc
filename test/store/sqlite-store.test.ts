// The SQLite store passes the conformance suite, on a real file.
import { SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import { tempDir } from "../helpers/server.js";
import { storeConformance } from "./conformance.js";

storeConformance("SQLite", async () => {
  const dir = tempDir("amctl-sqlite-");
  return { store: new SqliteStore(dir), reopen: async () => new SqliteStore(dir) };
});
