// The event feed's own connection to the database: it LISTENs on the events channel, runs the
// feed's reads, and polls. When it is lost (the database restarted, the network broke, a read
// failed or timed out) the store reports itself unavailable, and the connection is made again
// with backoff; once LISTEN is back and the feed has read everything committed meanwhile (which
// no notification announced), the store is available again. The pool's connections need no such
// care: a broken one fails its own write, and the pool opens a new one for the next.
import pg, { type PoolConfig, type QueryResultRow } from "pg";
import type { Queryable } from "./event-rows.js";

export interface ListenHandlers {
  /** A transaction committed events up to `sequence`. */
  notified(sequence: bigint): void;
  /** Reads whatever was committed after the last delivery; on every poll, and after a reconnection. */
  catchUp(): Promise<void>;
  /** The connection was lost (false, with the reason), or is back and caught up (true). */
  availability(available: boolean, reason?: string): void;
}

/** A poll reads even without a notification: one is lost while the connection is down. */
const POLL_MS = 1000;
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 2000;
/** A read or connection attempt that takes longer counts as a lost connection. */
const TIMEOUT_MS = 10_000;
/** How the connection shows in pg_stat_activity. */
const APPLICATION_NAME = "amctl-events";

export class ListenConnection implements Queryable {
  private client: pg.Client | undefined;
  private available = true;
  private retryMs = FIRST_RETRY_MS;
  private retry: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly config: PoolConfig,
    private readonly channel: string,
    private readonly handlers: ListenHandlers,
  ) {}

  /** Connects and listens; throws if the database cannot be reached, so that the store does not open. */
  async start(): Promise<void> {
    this.client = await this.connect();
    this.poll = setInterval(() => {
      if (this.client !== undefined) this.handlers.catchUp().catch(() => undefined);
    }, POLL_MS);
    this.poll.unref();
  }

  async query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<{ rows: R[] }> {
    const client = this.client;
    if (client === undefined) throw new Error("the event feed's database connection is down");
    try {
      return await client.query<R>(sql, params);
    } catch (error) {
      this.drop(client, error);
      throw error;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.poll);
    clearTimeout(this.retry);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      ...this.config,
      application_name: APPLICATION_NAME,
      keepAlive: true,
      connectionTimeoutMillis: TIMEOUT_MS,
      query_timeout: TIMEOUT_MS,
    });
    // Without a listener an error would end the process; after the drop it is only noise.
    client.on("error", (error) => this.drop(client, error));
    client.on("end", () => this.drop(client, new Error("the connection ended")));
    client.on("notification", ({ channel, payload }) => {
      if (channel === this.channel && payload !== undefined && /^\d+$/.test(payload)) this.handlers.notified(BigInt(payload));
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    return client;
  }

  /** `client` failed: unless it was replaced already, the store is unavailable until a new one has caught up. */
  private drop(client: pg.Client, error: unknown): void {
    if (client !== this.client) return;
    this.client = undefined;
    client.end().catch(() => undefined);
    this.setAvailable(false, error instanceof Error ? error.message : String(error));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retry !== undefined) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.reconnect();
    }, delay);
  }

  private async reconnect(): Promise<void> {
    let client: pg.Client;
    try {
      client = await this.connect();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    try {
      await this.handlers.catchUp();
    } catch {
      return; // the failed read dropped the connection, which schedules the next attempt
    }
    if (this.client !== client) return;
    this.retryMs = FIRST_RETRY_MS;
    this.setAvailable(true);
  }

  private setAvailable(available: boolean, reason?: string): void {
    if (this.available === available) return;
    this.available = available;
    this.handlers.availability(available, reason);
  }
}
