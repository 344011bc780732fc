// Server settings and their defaults, in one place. The CLI (`amctl serve`) fills this from
// flags; tests build it directly.
import { create } from "@bufbuild/protobuf";
import type { Level } from "pino";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { LocalProcessOptions } from "../executors/local-process.js";
import type { SandboxSettings } from "../sandbox/execution-isolation.js";
import { defaultRetryPolicy, type EffectiveRetryPolicy } from "../lifecycle/retry.js";
import type { RetentionPolicy } from "../store/store.js";
import { defaultConnectionLimits, type ConnectionLimits } from "./connection-limits.js";

export interface ServerConfig {
  /** Interface to bind; loopback by default so a fresh install is not reachable from the network. */
  host: string;
  /** TCP port; 0 picks a free one (the chosen address is logged). */
  port: number;
  /** Directory of the server's durable state. Created if missing. */
  dataDir: string;
  /**
   * Where operations, events and budgets are kept: a `postgres://` URL (a PostgreSQL database that
   * several replicas may share), or unset / `sqlite` for the embedded SQLite file in `dataDir`.
   */
  store?: string;
  logLevel: Level;
  /** Largest request message accepted, per message, on every protocol. */
  maxMessageBytes: number;
  /** A connection that sends no request line or HTTP/2 preface within this is closed. */
  connectionPrefaceTimeoutMs: number;
  /** Connections held at once (in all, and per address) and how long an idle one stays. */
  connectionLimits: ConnectionLimits;
  /** How long shutdown waits for open calls and streams before it closes connections. */
  shutdownGraceMs: number;
  /**
   * Operator public keys (SPKI PEM files) whose signed root delegations the server accepts.
   * `<dataDir>/operator/operator.pub`, written by `amctl init`, is added when it exists.
   */
  trustAnchors: string[];
  /**
   * A directory of policy bundles (`*.yaml`, one per profile type) applied at start when they
   * differ from the bundles in force. Unset: `<dataDir>/policies` if it exists (amctl init
   * writes the defaults there).
   */
  policyDir?: string;
  /** How long a verified credential is trusted without a store lookup (the revocation bound across replicas). */
  credentialCacheMs: number;
  /** Budget that bounds an execution when nothing smaller applies; published in GetContract. */
  defaultBudget: Budget;
  /** Events kept for replay; older ones are compacted (a cursor before them is OutOfRange). */
  eventRetention: RetentionPolicy;
  /** How long an execution's output is kept after its last append; unset: as long as events (eventRetention.maxAgeMs). */
  outputRetentionMs?: number;
  compactionIntervalMs: number;
  /** How long a workspace is kept after its operation ends; the sweep, every compaction interval, then removes it. */
  workspaceRetentionMs: number;
  /** Bytes all workspaces may hold together (src/lifecycle/workspace-keeper.ts: what happens at the limit); 0 for no limit. */
  workspaceDiskLimitBytes: number;
  /** An idle WatchEvents stream gets a bookmark this often. */
  bookmarkIntervalMs: number;
  /**
   * How watch streams read the history the in-memory window no longer holds
   * (src/lifecycle/history-replay.ts): pages of at most `pageEvents` events and `pageSpan`
   * sequences, at most `pagesInFlight` pages at once on the whole server, one page started per
   * turn of the event loop.
   */
  replay: { pageEvents: number; pageSpan: number; pagesInFlight: number };
  /**
   * A stream is cut off (ResourceExhausted) when its unsent bytes have not shrunk for this long,
   * checked one period after a message is handed over: about twice this in all.
   */
  slowSubscriberTimeoutMs: number;
  /**
   * Serve WatchEvents, WatchOperation and WatchAuditRecords over gRPC on HTTP/2 by the lean path
   * (src/server/lean-watch.ts) rather than connect-node's pipeline; the answers are the same.
   */
  leanWatchStreams: boolean;
  /** Executions running at once; more wait in queued, first come first served. */
  maxConcurrentExecutions: number;
  /** How often the runner says it is alive (and, on a shared store, looks for abandoned tasks). */
  runnerHeartbeatMs: number;
  /** A runner silent this long is taken for dead and its running tasks are taken over. */
  runnerTimeoutMs: number;
  /** Retry policy of executions that set none. */
  defaultRetry: EffectiveRetryPolicy;
  execution: LocalProcessOptions;
  /**
   * The container runtime that runs agent_machine.container.run: `podman`, `docker` (looked up
   * on PATH at start) or the path of a CLI that takes their flags. Unset: container runs are
   * refused at admission. It runs with `execution`'s environment allowlist, output limit, wall
   * clock and kill grace.
   */
  containerRuntime?: string;
  /**
   * The Ed25519 key (PKCS#8 PEM) that signs audit checkpoints, created if missing; default
   * `<dataDir>/audit/signing-key.pem`. Replicas sharing a store must be given the same file.
   */
  auditKeyFile?: string;
  /** A signed audit checkpoint is made this often when the log grew (and at shutdown). */
  auditCheckpointIntervalMs: number;
  /**
   * Refusals of callers that were not authenticated are summed per source address and reason
   * over this interval: the first is recorded at once, the rest in one summary record at the
   * end of the interval (src/audit/refusal-summaries.ts).
   */
  auditRefusalIntervalMs: number;
  /** How many source addresses the refusal summaries track per interval; others are summed together. */
  auditRefusalSources: number;
  /**
   * false: no audit record is written (only for measuring what the audit costs: the bench;
   * deliberately not a flag of `amctl serve`).
   */
  audit: boolean;
  /**
   * Set: executions run on remote workers (`amctl worker`, WorkerService), none on this
   * server; a worker's lease on an attempt expires unless renewed within `leaseTtlMs`.
   * Unset: this server runs executions itself and refuses workers.
   */
  remoteWorkers?: { leaseTtlMs: number };
  /** How executions are confined (src/sandbox/, docs/sandbox.md). */
  sandbox: SandboxSettings;
  /**
   * Where Prometheus scrapes `/metrics`, on a listener apart from the API's port (port 0 picks
   * a free one; the address is logged). Unset: no metrics are kept or served.
   */
  metricsListen?: { host: string; port: number };
  /**
   * The web console (`/console/`) offers actions (cancel an operation, revoke a delegation),
   * each behind a confirmation. false: it only reads. The caller's credential still decides.
   */
  consoleActions: boolean;
  /**
   * A file declaring the upstream MCP servers the MCP gateway (`/mcp`) forwards to
   * (docs/mcp-gateway.md), read at start. Unset: the gateway offers no tools.
   */
  mcpUpstreams?: string;
}

export const defaultConfig: ServerConfig = {
  host: "127.0.0.1",
  port: 7070,
  dataDir: ".amctl",
  logLevel: "info",
  maxMessageBytes: 4 * 1024 * 1024,
  connectionPrefaceTimeoutMs: 10_000,
  connectionLimits: defaultConnectionLimits(),
  shutdownGraceMs: 8000,
  trustAnchors: [],
  credentialCacheMs: 1000,
  defaultBudget: create(BudgetSchema, {
    modelCalls: 200n,
    tokens: 160_000n,
    connectorCalls: 120n,
    cpuGpuComputeSeconds: 3600n,
    localDiskBytes: 20n * 1024n ** 3n,
    sandboxMemoryBytes: 8n * 1024n ** 3n,
    wallClockSeconds: 5400n,
    agentConcurrency: 2n,
  }),
  eventRetention: { maxEvents: 1_000_000, maxAgeMs: 7 * 24 * 3600 * 1000 },
  compactionIntervalMs: 60_000,
  workspaceRetentionMs: 7 * 24 * 3600 * 1000,
  workspaceDiskLimitBytes: 50 * 1024 ** 3,
  auditCheckpointIntervalMs: 10_000,
  auditRefusalIntervalMs: 60_000,
  auditRefusalSources: 1000,
  audit: true,
  bookmarkIntervalMs: 10_000,
  replay: { pageEvents: 2048, pageSpan: 8192, pagesInFlight: 4 },
  slowSubscriberTimeoutMs: 5_000,
  leanWatchStreams: true,
  maxConcurrentExecutions: 4,
  runnerHeartbeatMs: 2_000,
  runnerTimeoutMs: 10_000,
  defaultRetry: defaultRetryPolicy,
  execution: {
    envAllowlist: ["PATH", "LANG", "LC_ALL", "TZ", "TMPDIR"],
    outputLimitBytes: 1024 * 1024,
    defaultWallClockSeconds: 5400,
    killGraceMs: 2000,
  },
  sandbox: { unsafeNoSandbox: false, maxProcesses: 512, tmpBytes: 256 * 1024 * 1024 },
  consoleActions: false,
};

/** Parses `host:port` (IPv6 as `[::1]:7070`). Throws a message naming the flag on bad input. */
export function parseListen(text: string, flag = "--listen"): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new Error(`${flag} must be HOST:PORT (e.g. 127.0.0.1:7070), got "${text}"`);
  return { host: (match[1] ?? match[2]) as string, port };
}
