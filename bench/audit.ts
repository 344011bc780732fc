// The audit benchmark: durable SubmitOperation of record operations (tool_grant.apply, fresh
// request_id) over gRPC, in A/B runs of the same load against two servers that differ only in
// the audit log: the baseline runs without it (bench/serve-without-audit.ts), the subject with it
// (`amctl serve`: each submit's record is sealed onto the chain in the submit's own commit, its
// request digested by the audit interceptor). Goal: throughput ratio ≥ 0.9 at 64 clients.
import { verifySpeed } from "./audit-verify.js";
import type { SectionReport } from "./format.js";
import { runsPreamble } from "./load.js";
import { startServerProcess } from "./processes.js";
import type { Settings } from "./settings.js";
import { compareSubmits } from "./submit-ab.js";

export async function auditBenchmark(settings: Settings): Promise<SectionReport> {
  const { ratioLines, cpuLines, errors, ...data } = await compareSubmits(
    "audit",
    "audit on/off",
    { baseline: () => startServerProcess({ withoutAudit: true }), subject: () => startServerProcess() },
    { clients: 64, ratio: 0.9 },
    settings,
  );
  const verify = await verifySpeed(settings.auditVerifyRecords);
  return {
    name: "audit",
    lines: [
      "Load (both sides): agentmachine.v1.OperationService/SubmitOperation of a record operation (tool_grant.apply, fresh request_id); durable (SQLite, synchronous=FULL).",
      "Baseline: the server with the audit log off; subject: with it on (one record per submit, in the submit's commit).",
      runsPreamble(settings),
      "",
      data.table,
      "",
      ...ratioLines,
      ...cpuLines,
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
      "",
      ...verify.lines,
    ],
    data: { ...data, errors, verify: verify.data },
  };
}
