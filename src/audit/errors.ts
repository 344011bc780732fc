// Errors of the audit log's retention, built in one place so each kind looks the same on the wire.
import { Code } from "@connectrpc/connect";
import { errorWithInfo } from "../api/errors.js";
import type { AuditPruneResult } from "../store/store.js";

/** Why a prune (AuditService.PruneAuditLog) was refused: nothing was deleted. */
export function pruneRefused(size: bigint, headHash: string, result: Exclude<AuditPruneResult, { kind: "pruned" }>) {
  const metadata = { checkpoint_size: String(size) };
  switch (result.kind) {
    case "no-checkpoint":
      return errorWithInfo(
        Code.FailedPrecondition,
        "AUDIT_NOT_CHECKPOINTED",
        `no checkpoint of size ${size} is stored: only records a signed checkpoint covers can be pruned, up to a checkpoint's size (ListCheckpoints)`,
        metadata,
      );
    case "head-mismatch":
      return errorWithInfo(
        Code.FailedPrecondition,
        "AUDIT_HEAD_MISMATCH",
        `the checkpoint of size ${size} states the head ${result.checkpoint.headHash}, not ${headHash}: the archive is not of this log`,
        { ...metadata, head_hash: result.checkpoint.headHash },
      );
    case "log-mismatch":
      return errorWithInfo(
        Code.FailedPrecondition,
        "AUDIT_LOG_MISMATCH",
        `the stored record ${size} is not the one the checkpoint of size ${size} signed: verify the log (amctl audit verify) before pruning it`,
        metadata,
      );
  }
}
