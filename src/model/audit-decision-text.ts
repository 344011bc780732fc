// How an audit record's decision reads, in records of every version: records written before
// 0.x spell the denial code and the gates as strings (`code: "permission_denied"`,
// `gate: "containerExecution,networkProfile"`), later ones as enums (`denial_code`, `gates`).
// Old records are kept as written, since their hashes cover those fields.
import type { AuditDecision } from "../gen/agentmachine/v1/audit_pb.js";
import { Code } from "../gen/google/rpc/code_pb.js";
import { gateName } from "./policy-gates.js";

/** The denial code as gRPC spells it, `PERMISSION_DENIED`; empty when allowed. */
export function denialCodeText(decision: AuditDecision): string {
  const legacy = decision.code;
  if (decision.denialCode === Code.OK) return legacy.toUpperCase();
  return Code[decision.denialCode] ?? String(decision.denialCode);
}

/** The gates that decided, as bundles spell them: `containerExecution, networkProfile`. */
export function gatesText(decision: AuditDecision): string {
  const legacy = decision.gate;
  return decision.gates.length === 0 ? legacy.split(",").filter(Boolean).join(", ") : decision.gates.map(gateName).join(", ");
}
