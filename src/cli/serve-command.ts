// `amctl serve`: runs the server until SIGINT or SIGTERM, then shuts down gracefully. SIGHUP
// makes it read its trust anchors and policy directory again (it also watches them).
import { Option, type Command } from "commander";
import type { Level } from "pino";
import { defaultConfig, parseListen } from "../config/config.js";
import { integerFlag } from "./flags.js";
import { LOG_LEVELS, createLogger } from "../api/logger.js";
import { startServer } from "../server/server.js";
import { startTracing } from "../telemetry/otlp-tracing.js";

function positiveInteger(flag: string) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`${flag} must be a positive integer, got "${text}"`);
    return value;
  };
}

interface ServeOptions {
  listen: string;
  metricsListen?: { host: string; port: number };
  dataDir: string;
  store?: string;
  logLevel: string;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  connectionIdleTimeoutMs: number;
  maxConcurrentExecutions: number;
  trustAnchor: string[];
  policy?: string;
  mcpUpstreams?: string;
  containerRuntime?: string;
  auditKey?: string;
  auditCheckpointIntervalMs: number;
  auditRefusalIntervalMs: number;
  auditRefusalSources: number;
  workers?: boolean;
  leaseTtlMs: number;
  eventRetentionCount: number;
  eventRetentionHours: number;
  workspaceRetentionHours: number;
  workspaceDiskLimitBytes: number;
  outputRetentionHours?: number;
  unsafeNoSandbox?: boolean;
  sandboxMaxProcesses: number;
  consoleActions?: boolean;
}

export function registerServeCommand(program: Command): void {
  program
    .command("serve")
    .description("Run the server: gRPC, Connect and gRPC-Web on one port, HTTP/2 and HTTP/1.1.")
    .option("--listen <host:port>", "address to listen on; port 0 picks a free port", `${defaultConfig.host}:${defaultConfig.port}`)
    .option(
      "--metrics-listen <host:port>",
      "serve Prometheus metrics at /metrics on this address, apart from the API's port; port 0 picks a free port (logged); unset, no metrics are kept or served",
      (text: string) => parseListen(text, "--metrics-listen"),
    )
    .option("--data-dir <dir>", "directory of the server's durable state", defaultConfig.dataDir)
    .addOption(
      new Option(
        "--store <url>",
        "where operations and events are kept: sqlite (the default: a file in the data dir) or a postgres:// URL shared by replicas; prefer AMCTL_STORE for a URL with a password",
      ).env("AMCTL_STORE"),
    )
    .option("--log-level <level>", `one of ${LOG_LEVELS.join(", ")}`, defaultConfig.logLevel)
    .option("--max-message-bytes <n>", "largest request message accepted", positiveInteger("--max-message-bytes"), defaultConfig.maxMessageBytes)
    .option("--shutdown-grace-ms <n>", "how long shutdown waits for open calls", positiveInteger("--shutdown-grace-ms"), defaultConfig.shutdownGraceMs)
    .option(
      "--max-connections <n>",
      "connections held at once; beyond it a new one replaces the longest-idle one, or is refused when all are busy (default: 3/4 of the open-file limit, at most 10000)",
      positiveInteger("--max-connections"),
      defaultConfig.connectionLimits.maxConnections,
    )
    .option(
      "--max-connections-per-address <n>",
      "connections held at once from one IPv4 address or IPv6 /64, loopback included",
      positiveInteger("--max-connections-per-address"),
      defaultConfig.connectionLimits.maxConnectionsPerAddress,
    )
    .option(
      "--connection-idle-timeout-ms <n>",
      "a connection with no request or stream open for this long is closed",
      positiveInteger("--connection-idle-timeout-ms"),
      defaultConfig.connectionLimits.idleTimeoutMs,
    )
    .option(
      "--trust-anchor <file>",
      "operator public key (PEM) whose root delegations are accepted, read again when it changes; repeatable",
      (file: string, files: string[]) => [...files, file],
      [] as string[],
    )
    .option(
      "--policy <dir>",
      "directory of policy bundles (*.yaml), applied at start and as they change; default <data-dir>/policies (watched until amctl init makes it)",
    )
    .option("--mcp-upstreams <file>", "YAML file declaring the upstream MCP servers the MCP gateway (/mcp) forwards to (docs/mcp-gateway.md)")
    .option(
      "--container-runtime <runtime>",
      "podman, docker, or the path of a CLI that takes their flags, to run container.run operations with; unset, they are refused",
    )
    .option(
      "--audit-key <file>",
      "Ed25519 private key (PEM) that signs audit checkpoints, created if missing; default <data-dir>/audit/signing-key.pem; replicas sharing a store need the same file",
    )
    .option(
      "--audit-checkpoint-interval-ms <n>",
      "how often a signed audit checkpoint is made when the log grew (also at shutdown)",
      positiveInteger("--audit-checkpoint-interval-ms"),
      defaultConfig.auditCheckpointIntervalMs,
    )
    .option(
      "--audit-refusal-interval-ms <n>",
      "refusals of unauthenticated calls are summed per source address and reason over this interval: the first is recorded at once, the rest in one record with their count",
      positiveInteger("--audit-refusal-interval-ms"),
      defaultConfig.auditRefusalIntervalMs,
    )
    .option(
      "--audit-refusal-sources <n>",
      "source addresses whose refusals are summed apart per interval; the rest are summed together",
      positiveInteger("--audit-refusal-sources"),
      defaultConfig.auditRefusalSources,
    )
    .option("--workers", "run executions on remote workers (amctl worker) instead of on this server")
    .option("--lease-ttl-ms <n>", "with --workers: a worker's lease on a task expires unless renewed within this", positiveInteger("--lease-ttl-ms"), 10_000)
    .option(
      "--max-concurrent-executions <n>",
      "executions running at once; more wait in queued",
      positiveInteger("--max-concurrent-executions"),
      defaultConfig.maxConcurrentExecutions,
    )
    .option("--event-retention-count <n>", "events kept for replay", positiveInteger("--event-retention-count"), defaultConfig.eventRetention.maxEvents)
    .option(
      "--event-retention-hours <n>",
      "hours events are kept for replay",
      positiveInteger("--event-retention-hours"),
      defaultConfig.eventRetention.maxAgeMs / 3_600_000,
    )
    .option(
      "--workspace-retention-hours <n>",
      "hours an ended operation's workspace is kept (amctl files) before it is removed",
      positiveInteger("--workspace-retention-hours"),
      defaultConfig.workspaceRetentionMs / 3_600_000,
    )
    .option(
      "--workspace-disk-limit-bytes <n>",
      "bytes all workspaces may hold together: at the limit the oldest ended operations' workspaces are removed, and if that is not enough new executions are refused (ResourceExhausted); 0 for no limit",
      integerFlag(0),
      defaultConfig.workspaceDiskLimitBytes,
    )
    .option(
      "--output-retention-hours <n>",
      "hours an execution's output (amctl logs) is kept after its last byte; default: as long as events",
      positiveInteger("--output-retention-hours"),
    )
    .option(
      "--sandbox-max-processes <n>",
      "cap on the processes and threads of one execution's sandbox",
      positiveInteger("--sandbox-max-processes"),
      defaultConfig.sandbox.maxProcesses,
    )
    .option(
      "--console-actions",
      "let the web console (/console/) cancel operations and revoke delegations, each after a confirmation; without it the console only reads",
    )
    .option(
      "--unsafe-no-sandbox",
      "DEVELOPMENT ONLY: run executions unconfined, as this server's user (it can read the data dir and keys); warned at start, shown in health, GetContract and diagnostics",
    )
    .action(async (options: ServeOptions) => {
      if (!LOG_LEVELS.includes(options.logLevel as Level)) {
        throw new Error(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got "${options.logLevel}"`);
      }
      const log = createLogger(options.logLevel as Level);
      // Before the server, so that its first call is traced; nothing unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
      const tracing = startTracing(process.env, log);
      const server = await startServer(
        {
          ...defaultConfig,
          ...parseListen(options.listen),
          ...(options.metricsListen !== undefined ? { metricsListen: options.metricsListen } : {}),
          dataDir: options.dataDir,
          ...(options.store !== undefined ? { store: options.store } : {}),
          logLevel: options.logLevel as Level,
          maxMessageBytes: options.maxMessageBytes,
          shutdownGraceMs: options.shutdownGraceMs,
          connectionLimits: {
            maxConnections: options.maxConnections,
            maxConnectionsPerAddress: options.maxConnectionsPerAddress,
            idleTimeoutMs: options.connectionIdleTimeoutMs,
          },
          maxConcurrentExecutions: options.maxConcurrentExecutions,
          trustAnchors: options.trustAnchor,
          ...(options.policy !== undefined ? { policyDir: options.policy } : {}),
          ...(options.mcpUpstreams !== undefined ? { mcpUpstreams: options.mcpUpstreams } : {}),
          ...(options.containerRuntime !== undefined ? { containerRuntime: options.containerRuntime } : {}),
          ...(options.auditKey !== undefined ? { auditKeyFile: options.auditKey } : {}),
          auditCheckpointIntervalMs: options.auditCheckpointIntervalMs,
          auditRefusalIntervalMs: options.auditRefusalIntervalMs,
          auditRefusalSources: options.auditRefusalSources,
          ...(options.workers === true ? { remoteWorkers: { leaseTtlMs: options.leaseTtlMs } } : {}),
          eventRetention: { maxEvents: options.eventRetentionCount, maxAgeMs: options.eventRetentionHours * 3_600_000 },
          workspaceRetentionMs: options.workspaceRetentionHours * 3_600_000,
          workspaceDiskLimitBytes: options.workspaceDiskLimitBytes,
          ...(options.outputRetentionHours !== undefined ? { outputRetentionMs: options.outputRetentionHours * 3_600_000 } : {}),
          sandbox: { ...defaultConfig.sandbox, unsafeNoSandbox: options.unsafeNoSandbox === true, maxProcesses: options.sandboxMaxProcesses },
          consoleActions: options.consoleActions === true,
        },
        log,
      );
      const stop = (signal: string): void => {
        log.info({ signal }, "signal received");
        // A second signal means "now".
        process.once("SIGINT", () => process.exit(1));
        process.once("SIGTERM", () => process.exit(1));
        // The spans still buffered go out after the last call has ended.
        server
          .close()
          .then(() => tracing?.shutdown())
          .then(
            () => process.exit(0),
            (error: unknown) => {
              log.error({ err: error }, "shutdown failed");
              process.exit(1);
            },
          );
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGHUP", () => {
        log.info({ signal: "SIGHUP" }, "signal received");
        void server.reload("SIGHUP");
      });
    });
}
