// A connection held for a transaction whose server side goes away between two queries (the
// database restarts, an administrator terminates it) must not end the process: the next query
// fails and the client is released as broken.
import pg from "pg";
import { expect, it } from "vitest";
import { checkout } from "../../src/store/postgres/checkout.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";

const { database } = clusterForFile();

it("survives the connection breaking while the client is checked out and idle", async () => {
  const url = await database("checkout");
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on("error", () => undefined);
  const unhandled: unknown[] = [];
  const onUncaught = (error: unknown): void => void unhandled.push(error);
  process.on("uncaughtException", onUncaught);
  try {
    const { client, release } = await checkout(pool);
    const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
    await admin.end();
    // The "error" event of the broken connection comes while nothing runs on the client.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const failure = await client.query("SELECT 1").then(
      () => undefined,
      (error: Error) => error,
    );
    expect(failure).toBeInstanceOf(Error);
    release(failure);
    expect(unhandled).toEqual([]);
    // The pool goes on with a fresh connection.
    const again = await checkout(pool);
    expect((await again.client.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one).toBe(1);
    again.release();
  } finally {
    process.off("uncaughtException", onUncaught);
    await pool.end();
  }
});
