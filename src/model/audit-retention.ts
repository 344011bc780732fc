// What the audit log says of its own retention: the record of a prune (AuditService.PruneAuditLog)
// names, as its resource, the checkpoint the retained log starts from. The store writes it; a
// verifier of a pruned log looks for it (src/audit/verify.ts).
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import type { AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";

/** The resource of the record of a prune of the records up to `size`. */
export function prunedTo(size: bigint): string {
  return `auditCheckpoints/${size}`;
}

const PRUNE_RPC = `/${AuditService.typeName}/${AuditService.method.pruneAuditLog.name}`;

/** Whether `record` is of the prune that deleted the records up to `size`. */
export function isPruneTo(record: AuditRecord, size: bigint): boolean {
  return record.rpc === PRUNE_RPC && record.resource === prunedTo(size) && record.decision?.allowed === true;
}
