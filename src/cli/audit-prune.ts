// `amctl audit prune --checkpoint <size|latest> --archive FILE`: the audit log's retention. The
// records a signed checkpoint covers are first written to an archive (the export format, from
// where the log now starts up to the checkpoint), which is flushed to disk and verified; only
// then does the server delete them (AuditService.PruneAuditLog), in one commit with the record
// of the prune. The checkpoint stays on the server: the retained log verifies from it, and the
// archives followed by the retained log verify as the whole log (`amctl audit verify --archive`).
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { Writable } from "node:stream";
import { verifyExportFile, writeExport } from "../audit/export-file.js";
import { parseVerifierKey, type VerifierKey } from "../audit/signed-note.js";
import type { AuditCheckpoint, AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { allCheckpoints, allRecords, type AuditClient } from "./audit-reads.js";
import { serviceClient } from "./client.js";
import { writeWhole } from "./whole-file.js";

export interface PruneOptions {
  server: string;
  checkpoint: string;
  archive: string;
  /** The verifier key the archive is checked with; default: the key the server publishes. */
  verifier?: VerifierKey;
}

/** The checkpoint named by `--checkpoint` (a size, or `latest`), and every checkpoint up to it. */
async function chosenCheckpoint(client: AuditClient, which: string): Promise<{ checkpoint: AuditCheckpoint; upTo: AuditCheckpoint[] }> {
  if (which !== "latest" && !/^[1-9][0-9]*$/.test(which)) throw new Error(`--checkpoint must be a checkpoint's size or "latest", got "${which}"`);
  const checkpoints = await allCheckpoints(client);
  const newest = checkpoints.at(-1);
  if (newest === undefined) throw new Error("the log has no checkpoint yet: only records a signed checkpoint covers can be pruned");
  const size = which === "latest" ? newest.size : BigInt(which);
  const checkpoint = checkpoints.find((c) => c.size === size);
  if (checkpoint === undefined) {
    throw new Error(
      size > newest.size
        ? `no checkpoint of size ${size}: the newest covers ${newest.size} records, and records no signed checkpoint covers cannot be pruned`
        : `no checkpoint of size ${size} (amctl audit export lists them): a prune cuts the log at a checkpoint`,
    );
  }
  return { checkpoint, upTo: checkpoints.filter((c) => c.size <= size) };
}

/** The records up to `size`, from the first the server still holds. */
async function* recordsUpTo(client: AuditClient, size: bigint): AsyncGenerator<AuditRecord> {
  for await (const record of allRecords(client)) {
    if (record.sequence > size) return;
    yield record;
  }
}

export async function pruneLog(options: PruneOptions): Promise<void> {
  const client = serviceClient(AuditService, options.server);
  const { verifierKey } = await client.getCheckpoint({});
  const verifier = options.verifier ?? parseVerifierKey(verifierKey);
  // An archive may be all that is left of its records: never written over.
  if (existsSync(options.archive)) throw new Error(`${options.archive} exists: an archive is never overwritten, name a new file`);
  const { checkpoint, upTo } = await chosenCheckpoint(client, options.checkpoint);
  const { size, headHash, origin } = checkpoint;
  const first = (await client.listAuditRecords({ pageSize: 1 })).records[0]?.sequence;
  if (first === undefined || first > size) {
    console.error(`nothing to prune: the log already starts after record ${size}`);
    return;
  }
  await writeWhole(options.archive, (out: Writable) => writeExport(recordsUpTo(client, size), upTo, { origin, verifierKey: verifier.text }, out));
  // What is on disk, read back, must be the log up to the checkpoint, before anything is deleted.
  const archived = await verifyExportFile(options.archive, verifier);
  if (!archived.ok || archived.records !== size || archived.head !== headHash) {
    await rm(options.archive);
    const why = archived.ok ? `it ends at record ${archived.records}, not at the checkpoint of size ${size}` : archived.reason;
    throw new Error(`the archive did not verify (${why}), so it was removed and nothing was pruned; amctl audit verify tells what is wrong with the log`);
  }
  const { prunedRecords } = await client.pruneAuditLog({ checkpointSize: size, headHash });
  console.error(
    `archived records ${first} to ${size} and ${upTo.length} checkpoints to ${options.archive}; pruned ${prunedRecords} records: the log now starts from the checkpoint of size ${size}`,
  );
}
