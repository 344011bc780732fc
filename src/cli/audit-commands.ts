// `amctl audit key | export | verify`: the server's audit log (docs/audit.md), read through
// AuditService and checked here. The server serves what its store holds; whether anyone changed
// that is for a verifier outside it to say, with a verifier key kept outside it.
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { createInterface } from "node:readline";
import { PassThrough, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { readVerifierKeyFile } from "../audit/audit-key.js";
import { verifyExportFile, writeExport } from "../audit/export-file.js";
import { parseVerifierKey, unverifiedCheckpoint, type Checkpoint, type VerifierKey } from "../audit/signed-note.js";
import { verifyLog, type VerifyResult } from "../audit/verify.js";
import type { AuditCheckpoint, AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";

type AuditClient = Client<typeof AuditService>;

/** The largest page AuditService serves. */
const PAGE_SIZE = 1000;

interface Common {
  server: string;
}

/** Every checkpoint, oldest first. */
async function allCheckpoints(client: AuditClient): Promise<AuditCheckpoint[]> {
  const checkpoints: AuditCheckpoint[] = [];
  let pageToken = "";
  do {
    const page = await client.listCheckpoints({ pageSize: PAGE_SIZE, pageToken });
    checkpoints.push(...page.checkpoints);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return checkpoints;
}

/** Every record in sequence order, a page at a time, so that a log of any length streams through. */
async function* allRecords(client: AuditClient): AsyncGenerator<AuditRecord> {
  let pageToken = "";
  do {
    const page = await client.listAuditRecords({ pageSize: PAGE_SIZE, pageToken });
    yield* page.records;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
}

/**
 * The server's log. Its checkpoints are read before its records: records appended meanwhile
 * only make the log longer than its last checkpoint, whereas a checkpoint signed after the
 * records were read could cover records never read, which would look like a truncation.
 */
async function serverLog(client: AuditClient): Promise<{ checkpoints: AuditCheckpoint[]; records: AsyncGenerator<AuditRecord> }> {
  const checkpoints = await allCheckpoints(client);
  return { checkpoints, records: allRecords(client) };
}

/** Writes `file` through a partial file that takes its name only once complete and flushed to disk. */
async function writeWhole(file: string, write: (out: Writable) => Promise<void>): Promise<void> {
  const partial = `${file}.partial`;
  const lines = new PassThrough();
  try {
    // Awaited together, so that a failure on either side ends the export: a failed write
    // destroys `lines`, which fails the pipeline; a failed file fails it directly.
    await Promise.all([
      write(lines).then(
        () => lines.end(),
        (error: unknown) => lines.destroy(error as Error),
      ),
      pipeline(lines, createWriteStream(partial, { mode: 0o600, flush: true })),
    ]);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  await rename(partial, file);
}

async function exportLog(options: Common & { output?: string }): Promise<void> {
  const client = serviceClient(AuditService, options.server);
  const { verifierKey } = await client.getCheckpoint({});
  const { checkpoints, records } = await serverLog(client);
  // A log without a checkpoint yet has no origin on record; the key's name is the origin by
  // convention (docs/audit.md), and no checkpoint in the file will be held to it.
  const origin = checkpoints[0]?.origin ?? parseVerifierKey(verifierKey).name;
  let count = 0;
  const counted = (async function* () {
    for await (const record of records) {
      count += 1;
      yield record;
    }
  })();
  const write = (out: Writable) => writeExport(counted, checkpoints, { origin, verifierKey }, out);
  if (options.output === undefined) await write(process.stdout);
  else await writeWhole(options.output, write);
  console.error(`exported ${count} records, ${checkpoints.length} checkpoints to ${options.output ?? "stdout"}`);
}

/**
 * The size of the last checkpoint of an export that verified: sizes never decrease, so it is
 * the largest. A second read of the file, since the verdict does not tell.
 */
async function lastCheckpointSize(file: string): Promise<bigint> {
  let last = 0n;
  for await (const line of createInterface({ input: createReadStream(file, { encoding: "utf8" }), crlfDelay: Infinity })) {
    if (!line.startsWith('{"checkpoint":')) continue;
    // The note was verified: what it claims is what it says.
    last = (unverifiedCheckpoint((JSON.parse(line) as { checkpoint: string }).checkpoint) as Checkpoint).size;
  }
  return last;
}

/** Prints the verdict; `checkpointed` is how many records the last checkpoint covers. */
function report(result: VerifyResult, checkpointed: bigint): void {
  if (!result.ok) {
    console.log(`FAILED: ${result.reason}`);
    process.exitCode = EXIT_INVALID;
    return;
  }
  console.log(`ok: ${result.records} records, ${result.checkpoints} checkpoints, head ${result.head}`);
  if (result.checkpoints === 0) {
    console.error("warning: no checkpoint: an unsigned chain shows only that it holds together, not that nobody rewrote or emptied it");
  } else if (result.records > checkpointed) {
    console.error(`warning: ${result.records - checkpointed} records are not covered by a checkpoint yet`);
  }
}

function verifierFromFile(file: string): VerifierKey {
  return parseVerifierKey(readVerifierKeyFile(file));
}

async function verify(options: Common & { key?: string; fromExport?: string }): Promise<void> {
  if (options.fromExport !== undefined) {
    if (options.key === undefined) {
      throw new Error(
        "verify --from-export needs --key FILE: an export must be verified with a verifier key obtained separately (saved from `amctl audit key`), because whoever edited the file can re-sign it and name their own key in its header",
      );
    }
    const result = await verifyExportFile(options.fromExport, verifierFromFile(options.key));
    report(result, result.ok ? await lastCheckpointSize(options.fromExport) : 0n);
    return;
  }
  const client = serviceClient(AuditService, options.server);
  let verifier: VerifierKey;
  if (options.key !== undefined) verifier = verifierFromFile(options.key);
  else {
    verifier = parseVerifierKey((await client.getCheckpoint({})).verifierKey);
    console.error(
      "warning: no --key: verified with the key the server publishes, which proves only that the log is internally consistent, not that nobody holding the signing key rewrote it; keep the key from `amctl audit key` elsewhere and pass --key FILE",
    );
  }
  const { checkpoints, records } = await serverLog(client);
  report(await verifyLog(records, checkpoints, verifier), checkpoints.at(-1)?.size ?? 0n);
}

export function registerAuditCommands(program: Command): void {
  const audit = program.command("audit").description("The audit log: its verifier key, a portable export, verification (needs a delegation with audit_read)");

  audit
    .command("key")
    .description("Print the server's verifier key, to save in a file kept away from the server (for verify --key).")
    .addOption(serverOption())
    .action(async (options: Common) => {
      console.log((await serviceClient(AuditService, options.server).getCheckpoint({})).verifierKey);
    });

  audit
    .command("export")
    .description("Write the whole log, records and signed checkpoints, as a portable export file (JSON lines, docs/audit.md).")
    .addOption(serverOption())
    .option("-o, --output <file>", "the file to write, whole or not at all (default: stdout)")
    .action(exportLog);

  audit
    .command("verify")
    .description(
      "Verify the server's log, or an export file, and name the first record or line found wrong. Exit 0 when it verifies, 1 when it does not (or the server refused), 2 on bad usage, an unreadable file or an unreachable server.",
    )
    .addOption(serverOption())
    .option("--key <file>", "the verifier key (from `amctl audit key`, kept elsewhere); required with --from-export; default: the key the server publishes")
    .option("--from-export <file>", "verify this export file instead of the server's log (no server needed)")
    .action(verify);
}
