// `amctl audit key | export | verify | prune`: the server's audit log (docs/audit.md), read
// through AuditService and checked here. The server serves what its store holds; whether anyone
// changed that is for a verifier outside it to say, with a verifier key kept outside it.
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { Writable } from "node:stream";
import type { Command } from "commander";
import { readVerifierKeyFile } from "../audit/audit-key.js";
import { ExportVerifier, readExportFile, writeExport } from "../audit/export-file.js";
import { parseVerifierKey, unverifiedCheckpoint, type Checkpoint, type VerifierKey } from "../audit/signed-note.js";
import { AuditVerifier, type VerifyFailure, type VerifyResult } from "../audit/verify.js";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { pruneLog } from "./audit-prune.js";
import { serverLog } from "./audit-reads.js";
import { serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";
import { writeWhole } from "./whole-file.js";

interface Common {
  server: string;
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
  const { start, pruneRecord } = result;
  const range = start === undefined ? `${result.records} records` : `records ${start + 1n} to ${result.records} from the checkpoint of size ${start}`;
  console.log(`ok: ${range}, ${result.checkpoints} checkpoints, head ${result.head}`);
  if (start !== undefined) {
    console.error(
      pruneRecord === undefined
        ? `warning: records 1 to ${start} are not in this log, and no record in it says that they were pruned`
        : `note: records 1 to ${start} were pruned (record ${pruneRecord}); to verify them too, pass their archives with --archive FILE`,
    );
  }
  if (result.checkpoints === 0) {
    console.error("warning: no checkpoint: an unsigned chain shows only that it holds together, not that nobody rewrote or emptied it");
  } else if (result.records > checkpointed) {
    console.error(`warning: ${result.records - checkpointed} records are not covered by a checkpoint yet`);
  }
}

function verifierFromFile(file: string): VerifierKey {
  return parseVerifierKey(readVerifierKeyFile(file));
}

/**
 * Verifies the archives in order, each going on from the one before; the log they make, to go on
 * from, or the first failure, naming its file.
 */
async function verifyArchives(files: readonly string[], verifier: VerifierKey): Promise<{ ok: true; log: AuditVerifier | undefined } | VerifyFailure> {
  let log: AuditVerifier | undefined;
  for (const file of files) {
    const exported = new ExportVerifier(verifier, log);
    const result = await readExportFile(file, exported);
    if (!result.ok) return { ...result, reason: `archive ${file}: ${result.reason}` };
    log = exported.verified;
  }
  return { ok: true, log };
}

interface VerifyOptions extends Common {
  key?: string;
  fromExport?: string;
  archive: string[];
}

async function verify(options: VerifyOptions): Promise<void> {
  if (options.fromExport !== undefined && options.key === undefined) {
    throw new Error(
      "verify --from-export needs --key FILE: an export must be verified with a verifier key obtained separately (saved from `amctl audit key`), because whoever edited the file can re-sign it and name their own key in its header",
    );
  }
  // Not connected until called: with --from-export, the server is never asked.
  const client = serviceClient(AuditService, options.server);
  let verifier: VerifierKey;
  if (options.key !== undefined) verifier = verifierFromFile(options.key);
  else {
    verifier = parseVerifierKey((await client.getCheckpoint({})).verifierKey);
    console.error(
      "warning: no --key: verified with the key the server publishes, which proves only that the log is internally consistent, not that nobody holding the signing key rewrote it; keep the key from `amctl audit key` elsewhere and pass --key FILE",
    );
  }
  const archived = await verifyArchives(options.archive, verifier);
  if (!archived.ok) return report(archived, 0n);
  if (options.fromExport !== undefined) {
    const result = await readExportFile(options.fromExport, new ExportVerifier(verifier, archived.log));
    return report(result, result.ok ? await lastCheckpointSize(options.fromExport) : 0n);
  }
  const { checkpoints, records } = await serverLog(client);
  report(await (archived.log ?? new AuditVerifier(verifier)).pushLog(records, checkpoints), checkpoints.at(-1)?.size ?? 0n);
}

export function registerAuditCommands(program: Command): void {
  const audit = program
    .command("audit")
    .description("The audit log: its verifier key, a portable export, verification, retention (needs a delegation with audit_read; prune, a root delegation)");

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
    .option(
      "--archive <file>",
      "an archive `amctl audit prune` wrote, verified first, the log going on from it; repeatable, oldest first: with every archive, the whole log is verified",
      (file: string, files: string[]) => [...files, file],
      [] as string[],
    )
    .action(verify);

  audit
    .command("prune")
    .description(
      "Delete the oldest records, those a signed checkpoint covers, after writing them to an archive (an export file, flushed to disk and verified first). The server keeps the checkpoint: the log verifies from it, and with the archives, whole. Needs a root delegation with audit_read.",
    )
    .addOption(serverOption())
    .requiredOption("--checkpoint <size|latest>", "the checkpoint to cut at: records up to its size are archived and deleted")
    .requiredOption("--archive <file>", "the archive to write (never overwritten); keep it, with the verifier key, away from the server")
    .option(
      "--key <file>",
      "the verifier key (from `amctl audit key`) the archive is verified with before anything is deleted; default: the key the server publishes",
    )
    .action((options: Common & { checkpoint: string; archive: string; key?: string }) =>
      pruneLog({ ...options, ...(options.key !== undefined ? { verifier: verifierFromFile(options.key) } : {}) }),
    );
}
