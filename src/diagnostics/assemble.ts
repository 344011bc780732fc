// The files of a diagnostics bundle, made from its sources through the allowlists: what each
// file says, before the detectors run. Every value here is either allowlisted or "[redacted]".
import { toJson, type DescMessage, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { OperationEventSchema } from "../gen/agentmachine/v1/event_pb.js";
import { OperationSchema } from "../gen/agentmachine/v1/operation_pb.js";
import { PolicyBundleSchema } from "../gen/agentmachine/v1/policy_pb.js";
import { operationAllowlist, project, type AllowlistTally } from "./allowlist.js";
import type { DiagnosticsSources } from "./collect.js";
import { projectConfig } from "./project-config.js";
import { projectLogLine } from "./project-logs.js";

export interface BundleFile {
  /** The file's name inside the bundle's folder, e.g. `operations.json`. */
  name: string;
  content: JsonValue;
}

function projected<T>(schema: DescMessage & { typeName: string }, messages: readonly T[], tally: AllowlistTally): JsonValue[] {
  // `schema` matches `T`: the casts only spare each caller a generic signature.
  return messages.map((message) => project(schema, toJson(schema as never, message as never), operationAllowlist, tally));
}

export function assembleFiles(sources: DiagnosticsSources, tally: AllowlistTally): BundleFile[] {
  const own = new Set(sources.recentOperations.map((operation) => operation.name));
  own.add(sources.operation.name);
  own.add(sources.operation.profile);
  const server: JsonObject = {
    ...sources.server,
    exportTime: sources.exportTime.toISOString(),
    operation: sources.operation.name,
    profile: sources.operation.profile,
  };
  const stats: JsonObject = {
    eventBounds: { oldest: sources.eventBounds.oldest.toString(), latest: sources.eventBounds.latest.toString() },
    operations: { profile: sources.operation.profile, ...sources.counts },
    recentOperationsIncluded: sources.recentOperations.length,
    eventsIncluded: sources.events.length,
    eventsScanned: sources.eventsScanned,
    eventsTruncated: sources.eventsTruncated,
  };
  return [
    { name: "server.json", content: server },
    { name: "config.json", content: projectConfig(sources.config, tally) },
    { name: "store-stats.json", content: stats },
    { name: "operations.json", content: projected(OperationSchema, sources.recentOperations, tally) },
    { name: "events.json", content: projected(OperationEventSchema, sources.events, tally) },
    { name: "policy-bundles.json", content: projected(PolicyBundleSchema, sources.policyBundles, tally) },
    { name: "recent-errors.json", content: sources.recentErrorLines.map((line) => projectLogLine(line, own, tally)) },
    { name: "health.json", content: { services: sources.health } },
  ];
}
