// The connections the listener holds, under the limits of connection-limits.ts. A connection
// is idle while it has no request (HTTP/1.1) or stream (HTTP/2) open, and is closed once it has
// been idle for the idle timeout: a watch stream or a proxy tunnel keeps its connection however
// quiet it is. A new connection beyond a cap takes the place of an idle connection in that cap's
// scope (its address, or all): one that never carried a request first (what a flood of silent
// sessions is made of), else the one idle the longest. So such a flood cannot shut out a caller
// that sends requests, not even from its own address (loopback, by default, is everyone's).
// Only when every connection in the scope is busy is the new one refused: destroyed at once,
// before any HTTP work is done for it.
import type * as net from "node:net";
import { addressKey } from "./address-key.js";
import type { ConnectionLimits } from "../config/connection-limits.js";

/** How long a connection closed for idleness may take to finish closing (an HTTP/2 GOAWAY) before it is cut off. */
const IDLE_CLOSE_GRACE_MS = 1_000;

export interface LimitEvent {
  /** refused: the new connection was closed; evicted: an idle one was closed to make room for it. */
  outcome: "refused" | "evicted";
  limit: "per-address" | "total";
  /** The new connection's address (as the per-address cap counts it). */
  address: string;
  max: number;
}

/** What the protocol on a held connection tells the table. */
export interface HeldConnection {
  /** A request or stream started: the connection is busy until as many have ended. */
  requestStarted(): void;
  requestEnded(): void;
  /** How to close the connection politely when it has been idle too long (default: destroy it). */
  onIdle(close: () => void): void;
}

/** Idle connections in the order they are closed to make room. */
class IdleQueue {
  // Sets keep insertion order: the one idle the longest first.
  private readonly neverUsed = new Set<Entry>();
  private readonly used = new Set<Entry>();

  add(entry: Entry): void {
    (entry.used ? this.used : this.neverUsed).add(entry);
  }

  delete(entry: Entry): void {
    this.neverUsed.delete(entry);
    this.used.delete(entry);
  }

  first(): Entry | undefined {
    return (this.neverUsed.values().next().value ?? this.used.values().next().value) as Entry | undefined;
  }
}

interface AddressGroup {
  count: number;
  idle: IdleQueue;
}

class Entry implements HeldConnection {
  /** Whether a request or stream was ever open on it. */
  used = false;
  private open = 0;
  private timer: NodeJS.Timeout | undefined;
  private closeIdle = (): void => void this.socket.destroy();

  constructor(
    readonly socket: net.Socket,
    readonly address: string,
    readonly group: AddressGroup,
    private readonly allIdle: IdleQueue,
    private readonly idleTimeoutMs: number,
  ) {
    this.becomeIdle();
  }

  requestStarted(): void {
    if (this.open++ > 0) return;
    this.leaveIdle();
    this.used = true;
  }

  requestEnded(): void {
    if (this.open > 0 && --this.open === 0) this.becomeIdle();
  }

  onIdle(close: () => void): void {
    this.closeIdle = close;
  }

  /** Out of the idle queues, its idle timer stopped: busy, or no longer held. */
  leaveIdle(): void {
    clearTimeout(this.timer);
    this.allIdle.delete(this);
    this.group.idle.delete(this);
  }

  private becomeIdle(): void {
    this.allIdle.add(this);
    this.group.idle.add(this);
    this.timer = setTimeout(() => {
      this.closeIdle();
      setTimeout(() => this.socket.destroy(), IDLE_CLOSE_GRACE_MS).unref();
    }, this.idleTimeoutMs).unref();
  }
}

export class ConnectionTable {
  private readonly entries = new Set<Entry>();
  private readonly idle = new IdleQueue();
  private readonly addresses = new Map<string, AddressGroup>();

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly onLimit: (event: LimitEvent) => void,
  ) {}

  /** Holds `socket`, making room if a cap is reached; undefined when it was refused (and destroyed). */
  admit(socket: net.Socket): HeldConnection | undefined {
    const remote = socket.remoteAddress;
    if (remote === undefined) {
      socket.destroy(); // reset before we got to it
      return undefined;
    }
    const address = addressKey(remote);
    const group = this.addresses.get(address) ?? { count: 0, idle: new IdleQueue() };
    if (
      !this.makeRoom(group.count, this.limits.maxConnectionsPerAddress, group.idle, "per-address", address) ||
      !this.makeRoom(this.entries.size, this.limits.maxConnections, this.idle, "total", address)
    ) {
      socket.destroy();
      return undefined;
    }
    this.addresses.set(address, group);
    group.count += 1;
    const entry = new Entry(socket, address, group, this.idle, this.limits.idleTimeoutMs);
    this.entries.add(entry);
    socket.once("close", () => this.release(entry));
    return entry;
  }

  /** Destroys every connection held (the end of a shutdown's grace period). */
  destroyAll(): void {
    for (const entry of this.entries) entry.socket.destroy();
  }

  /** Whether one more connection fits under `max`, once the first of `idle` is closed if need be. */
  private makeRoom(held: number, max: number, idle: IdleQueue, limit: LimitEvent["limit"], address: string): boolean {
    if (held < max) return true;
    const oldest = idle.first();
    this.onLimit({ outcome: oldest === undefined ? "refused" : "evicted", limit, address, max });
    if (oldest === undefined) return false;
    // Under pressure the descriptor is freed now, without a GOAWAY: the connection was idle.
    this.release(oldest);
    oldest.socket.destroy();
    return true;
  }

  private release(entry: Entry): void {
    if (!this.entries.delete(entry)) return;
    entry.leaveIdle();
    entry.group.count -= 1;
    if (entry.group.count === 0) this.addresses.delete(entry.address);
  }
}
