// How many connections the server holds, and for how long an idle one (no request or stream
// open) stays. Each connection costs a file descriptor and, over HTTP/2, some tens of KiB
// before it has sent a single request: without limits, a client that opens sessions and stays
// silent takes every descriptor, and then health, and every other caller, go unanswered.
import { readFileSync } from "node:fs";

export interface ConnectionLimits {
  /** Connections held at once, over all addresses. */
  maxConnections: number;
  /** Connections held at once from one IPv4 address or one IPv6 /64. */
  maxConnectionsPerAddress: number;
  /** A connection with no request or stream open for this long is closed (HTTP/2 with a GOAWAY). */
  idleTimeoutMs: number;
}

/** What the server keeps for itself out of its open-file limit: its store, logs, executions' pipes, egress upstreams. */
const RESERVED_SHARE = 0.25;

/** Above this, memory (tens of KiB per HTTP/2 session) rather than descriptors is what runs out first. */
const MAX_DEFAULT_CONNECTIONS = 10_000;

/** Where /proc/self/limits cannot be read: the common soft limit. */
const ASSUMED_OPEN_FILE_LIMIT = 1024;

/**
 * The process's soft limit of open files (Node raises it to the hard limit at start), from
 * /proc/self/limits on Linux; undefined elsewhere.
 */
export function openFileLimit(limitsFile = "/proc/self/limits"): number | undefined {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync(limitsFile, "utf8"));
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

/** Defaults: three quarters of the open-file limit (at most 10,000), 256 per address, a minute idle. */
export function defaultConnectionLimits(fileLimit = openFileLimit() ?? ASSUMED_OPEN_FILE_LIMIT): ConnectionLimits {
  return {
    maxConnections: Math.max(1, Math.min(MAX_DEFAULT_CONNECTIONS, Math.floor(fileLimit * (1 - RESERVED_SHARE)))),
    maxConnectionsPerAddress: 256,
    idleTimeoutMs: 60_000,
  };
}
