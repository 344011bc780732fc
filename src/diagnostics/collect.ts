// What a diagnostics bundle is made of, read from where it lives: the store (operations, their
// events, counts, policy bundles), the configuration, the health table and the logger's recent
// error lines. Everything of operations is of the export's own profile, and so are the log lines
// that concern a profile: a bundle never carries another profile's operations, events, counts or
// log lines.
import { readFileSync } from "node:fs";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { PolicyBundle } from "../gen/agentmachine/v1/policy_pb.js";
import { HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { operationTypeNames, taskStateNames } from "../model/mapping.js";
import type { ServerConfig } from "../config/config.js";
import type { HealthStatus } from "../api/health.js";
import type { EventBounds, StoreBundles, StoreEvents, StoreOperations } from "../store/store.js";
import { linesOfProfile } from "./log-profiles.js";

/** Operations included when the spec asks for 0. */
export const DEFAULT_RECENT_OPERATIONS = 100;
/** Operations counted at most (counting pages through them). */
export const MAX_COUNTED_OPERATIONS = 100_000;
/** Events read at most while looking for the recent operations' events (newest first). */
export const MAX_SCANNED_EVENTS = 200_000;
/** Events included at most. */
export const MAX_EVENTS = 50_000;

const PAGE = 1000;
/** Events may be a little out of time order across replicas: look this much further back. */
const CLOCK_SLACK_MS = 60_000;

export interface DiagnosticsContext {
  store: StoreOperations & StoreEvents & StoreBundles;
  config: ServerConfig;
  health: HealthStatus;
  /** The newest warn/error log lines, as written. */
  recentErrors(): readonly string[];
}

export interface OperationCounts {
  total: number;
  /** Contract type name → state name → count. */
  byTypeAndState: Record<string, Record<string, number>>;
  /** Whether there were more than MAX_COUNTED_OPERATIONS (the counts are of the newest ones). */
  truncated: boolean;
}

export interface DiagnosticsSources {
  /** The export operation itself. */
  operation: Operation;
  exportTime: Date;
  server: { version: string; node: string; platform: string; arch: string; uptimeSeconds: number };
  config: ServerConfig;
  eventBounds: EventBounds;
  counts: OperationCounts;
  /** Newest first. */
  recentOperations: Operation[];
  /** In sequence order. */
  events: OperationEvent[];
  eventsScanned: number;
  eventsTruncated: boolean;
  policyBundles: PolicyBundle[];
  /** The newest warn/error lines of the export's profile or of none (log-profiles.ts). */
  recentErrorLines: readonly string[];
  /** Service ("" is the server) → serving status name. */
  health: Record<string, string>;
}

let version: string | undefined;

/** The server's version: package.json's. */
export function serverVersion(): string {
  version ??= (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  return version;
}

async function countOperations(store: StoreOperations & StoreEvents & StoreBundles, profile: string): Promise<OperationCounts> {
  const counts: OperationCounts = { total: 0, byTypeAndState: {}, truncated: false };
  let beforeName: string | undefined;
  for (;;) {
    const page = await store.listOperations({ profile, limit: PAGE, ...(beforeName ? { beforeName } : {}) });
    for (const operation of page) {
      if (counts.total >= MAX_COUNTED_OPERATIONS) {
        counts.truncated = true;
        return counts;
      }
      const type = operationTypeNames.get(operation.type) ?? "unspecified";
      const state = taskStateNames.get(operation.state) ?? "unspecified";
      const byState = (counts.byTypeAndState[type] ??= {});
      byState[state] = (byState[state] ?? 0) + 1;
      counts.total += 1;
    }
    if (page.length < PAGE) return counts;
    beforeName = page[page.length - 1]!.name;
  }
}

/**
 * The events of `operations`, read newest first in windows until a window starts before the
 * oldest of them was created (or MAX_SCANNED_EVENTS were read), returned in sequence order.
 */
async function eventsOf(store: StoreOperations & StoreEvents & StoreBundles, operations: readonly Operation[], bounds: EventBounds) {
  const names = new Set(operations.map((operation) => operation.name));
  const createTimes = operations.flatMap((operation) => (operation.createTime ? [timestampDate(operation.createTime).getTime()] : []));
  const since = createTimes.length === 0 ? Number.POSITIVE_INFINITY : Math.min(...createTimes) - CLOCK_SLACK_MS;
  const events: OperationEvent[] = [];
  let scanned = 0;
  let after = bounds.latest;
  const floor = bounds.oldest - 1n;
  while (names.size > 0 && after > floor && scanned < MAX_SCANNED_EVENTS) {
    const from = after - BigInt(PAGE) > floor ? after - BigInt(PAGE) : floor;
    const batch = await store.readEvents(from, Number(after - from));
    scanned += batch.length;
    for (const stored of batch) if (names.has(stored.event.operation)) events.push(stored.event);
    const first = batch[0]?.event.time;
    if (first !== undefined && timestampDate(first).getTime() < since) break;
    after = from;
  }
  events.sort((a, b) => (a.sequence < b.sequence ? -1 : a.sequence > b.sequence ? 1 : 0));
  const truncated = events.length > MAX_EVENTS;
  return { events: truncated ? events.slice(events.length - MAX_EVENTS) : events, scanned, truncated };
}

export async function collect(context: DiagnosticsContext, operation: Operation, recentOperations: number): Promise<DiagnosticsSources> {
  const { store } = context;
  const limit = recentOperations || DEFAULT_RECENT_OPERATIONS;
  const eventBounds = await store.eventBounds();
  const recent = await store.listOperations({ profile: operation.profile, limit });
  const { events, scanned, truncated } = await eventsOf(store, recent, eventBounds);
  return {
    operation,
    exportTime: new Date(),
    server: { version: serverVersion(), node: process.version, platform: process.platform, arch: process.arch, uptimeSeconds: Math.round(process.uptime()) },
    config: context.config,
    eventBounds,
    counts: await countOperations(store, operation.profile),
    recentOperations: recent,
    events,
    eventsScanned: scanned,
    eventsTruncated: truncated,
    policyBundles: await store.listPolicyBundles(),
    recentErrorLines: await linesOfProfile(store, operation.profile, context.recentErrors()),
    health: Object.fromEntries(
      context.health.services().map((service) => [service, HealthCheckResponse_ServingStatus[context.health.get(service) ?? 0] ?? "UNKNOWN"]),
    ),
  };
}
