// A pooled connection held for a while (a transaction, the migrations). Its connection may break
// between two of its queries (the database restarts); pg then emits "error" on the client,
// which the pool listens to only while the client is idle, so without a listener of ours the
// process would end. The error needs no handling here: the next query on the client fails, and
// the caller rolls back, releases the client as broken and retries or reports it.
import type { Pool, PoolClient } from "pg";

const ignoreBrokenConnection = (): void => {};

export interface CheckedOut {
  client: PoolClient;
  /** Hands the client back; `broken`: close its connection instead of reusing it. */
  release(broken?: Error): void;
}

export async function checkout(pool: Pool): Promise<CheckedOut> {
  const client = await pool.connect();
  client.on("error", ignoreBrokenConnection);
  return {
    client,
    release(broken) {
      client.off("error", ignoreBrokenConnection);
      client.release(broken);
    },
  };
}
