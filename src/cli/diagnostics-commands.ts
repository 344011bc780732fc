// `amctl diagnostics export | download`: a redacted diagnostics bundle of one profile, made on
// the server (agent_machine.diagnostics.export_redacted) and saved here. The download is checked
// against the SHA-256 the operation recorded before the file takes its name.
import { randomUUID } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { DiagnosticsService } from "../gen/agentmachine/v1/diagnostics_service_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { operationClient, serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";
import { integerFlag, resourceName } from "./flags.js";
import { causeText, formatFields, stateName } from "./format.js";
import { saveVerified, type Saved } from "./verified-download.js";

interface Common {
  server: string;
  output?: string;
  json?: boolean;
}

function defaultFile(operation: string): string {
  return `amctl-diagnostics-${operation.replace(/^operations\//, "")}.tar.gz`;
}

/** Streams the bundle of `operation` into `file` (through a partial file), checking its digest. */
async function download(server: string, operation: Operation, file: string): Promise<Saved> {
  const artifact = operation.artifact?.kind.case === "agentMachineDiagnosticBundle" ? operation.artifact.kind.value : undefined;
  if (artifact === undefined) throw new Error(`${operation.name} has no diagnostics bundle (${stateName(operation)})`);
  const chunks = (async function* () {
    for await (const { chunk } of serviceClient(DiagnosticsService, server).downloadDiagnostics({ operation: operation.name })) yield chunk;
  })();
  return saveVerified(chunks, file, () => artifact, operation.name);
}

function report(operation: Operation, file: string, saved: Saved, json: boolean): void {
  if (json) console.log(JSON.stringify({ operation: operation.name, file, ...saved }));
  else
    console.log(
      formatFields([
        ["operation", operation.name],
        ["file", file],
        ["size", `${saved.sizeBytes} bytes`],
        ["sha256", saved.sha256],
      ]),
    );
}

async function waitForEnd(client: Client<typeof OperationService>, name: string): Promise<Operation> {
  for await (const _ of client.watchOperation({ name })) {
    // the stream ends after the terminal event
  }
  return (await client.getOperation({ name })).operation!;
}

async function exportDiagnostics(options: Common & { profile: string; recent?: number; requestId?: string }): Promise<void> {
  const client = operationClient(options.server);
  const { operation: submitted } = await client.submitOperation({
    requestId: options.requestId ?? randomUUID(),
    profile: options.profile,
    spec: { kind: { case: "diagnosticsExport", value: { recentOperations: options.recent ?? 0 } } },
  });
  const operation = await waitForEnd(client, submitted!.name);
  if (operation.state !== TaskState.COMPLETED) {
    console.error(`${operation.name}: ${stateName(operation)}${operation.stopCause ? ` (${causeText(operation.stopCause)})` : ""}`);
    process.exitCode = EXIT_INVALID;
    return;
  }
  const file = options.output ?? defaultFile(operation.name);
  report(operation, file, await download(options.server, operation, file), options.json === true);
}

export function registerDiagnosticsCommands(program: Command): void {
  const diagnostics = program.command("diagnostics").description("Redacted diagnostics bundles");

  diagnostics
    .command("export")
    .description(
      "Export a redacted diagnostics bundle of one profile, wait for it, and save it. Exit 0 when saved, 1 when the export failed (e.g. redaction_failed).",
    )
    .requiredOption("--profile <profile>", "profiles/ID (or just ID) whose operations the bundle covers", resourceName("profiles"))
    .option("--recent <n>", "how many recent operations to include (server default 100, at most 10000)", integerFlag(1))
    .option("-o, --output <file>", "where to save the .tar.gz (default: amctl-diagnostics-<operation id>.tar.gz)")
    .option("--request-id <id>", "idempotency key (default: a random UUID)")
    .addOption(serverOption())
    .option("--json", "print {operation, file, sizeBytes, sha256} as one JSON line")
    .action(exportDiagnostics);

  diagnostics
    .command("download")
    .description("Save the bundle of a completed diagnostics export again.")
    .argument("<operation>", "operations/ID (or just ID)", resourceName("operations"))
    .option("-o, --output <file>", "where to save the .tar.gz (default: amctl-diagnostics-<operation id>.tar.gz)")
    .addOption(serverOption())
    .option("--json", "print {operation, file, sizeBytes, sha256} as one JSON line")
    .action(async (name: string, options: Common) => {
      const operation = (await operationClient(options.server).getOperation({ name })).operation!;
      const file = options.output ?? defaultFile(operation.name);
      report(operation, file, await download(options.server, operation, file), options.json === true);
    });
}
