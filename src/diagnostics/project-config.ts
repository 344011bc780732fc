// The server's configuration as a bundle shows it: the settings listed here verbatim (limits,
// timeouts, intervals, budgets, the listen address, the names of the environment variables
// executions inherit), every other setting — paths, the store URL (which can hold a password),
// trust anchor files, the container runtime path, and any setting added later — "[redacted]",
// plus a few facts derived from the redacted ones (which store, how many trust anchors).
import { toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { ServerConfig } from "../config/config.js";
import type { AllowlistTally } from "./allowlist.js";
import { REDACTED } from "./detector.js";

export const configAllowlist: ReadonlySet<string> = new Set([
  "host",
  "port",
  "logLevel",
  "maxMessageBytes",
  "connectionPrefaceTimeoutMs",
  "connectionLimits.maxConnections",
  "connectionLimits.maxConnectionsPerAddress",
  "connectionLimits.idleTimeoutMs",
  "shutdownGraceMs",
  "credentialCacheMs",
  "defaultBudget",
  "eventRetention.maxEvents",
  "eventRetention.maxAgeMs",
  "outputRetentionMs",
  "compactionIntervalMs",
  "workspaceRetentionMs",
  "workspaceDiskLimitBytes",
  "bookmarkIntervalMs",
  "replay.pageEvents",
  "replay.pageSpan",
  "replay.pagesInFlight",
  "slowSubscriberTimeoutMs",
  "maxConcurrentExecutions",
  "runnerHeartbeatMs",
  "runnerTimeoutMs",
  "defaultRetry.maxAttempts",
  "defaultRetry.initialBackoffMs",
  "defaultRetry.maxBackoffMs",
  "execution.envAllowlist",
  "execution.outputLimitBytes",
  "execution.defaultWallClockSeconds",
  "execution.killGraceMs",
  "sandbox.unsafeNoSandbox",
  "sandbox.maxProcesses",
  "sandbox.tmpBytes",
]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function verbatim(value: unknown): JsonValue {
  if (isRecord(value) && value.$typeName === BudgetSchema.typeName) return toJson(BudgetSchema, value as unknown as Budget);
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(verbatim);
  if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, verbatim(item)]));
  return value as JsonValue;
}

function projectValue(value: unknown, path: string, tally: AllowlistTally): JsonValue {
  if (configAllowlist.has(path)) return verbatim(value);
  if (isRecord(value) && [...configAllowlist].some((allowed) => allowed.startsWith(`${path}.`))) {
    const out: JsonObject = {};
    for (const [key, item] of Object.entries(value)) if (item !== undefined) out[key] = projectValue(item, `${path}.${key}`, tally);
    return out;
  }
  tally.redactedFields += 1;
  return REDACTED;
}

export function projectConfig(config: ServerConfig, tally: AllowlistTally): JsonObject {
  const settings: JsonObject = {};
  for (const [key, value] of Object.entries(config)) if (value !== undefined) settings[key] = projectValue(value, key, tally);
  const store = config.store ?? "sqlite";
  return {
    settings,
    derived: {
      storeKind: /^postgres(?:ql)?:/i.test(store) ? "postgres" : "sqlite",
      containerRuntimeConfigured: config.containerRuntime !== undefined,
      trustAnchorFiles: config.trustAnchors.length,
      policyDirConfigured: config.policyDir !== undefined,
    },
  };
}
