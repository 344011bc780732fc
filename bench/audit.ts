// The audit benchmark: durable SubmitOperation of record operations (tool_grant.apply, fresh
// request_id) over gRPC, in A/B runs of the same load against two servers that differ only in
// the audit log: the baseline runs without it (bench/serve-without-audit.ts), the subject with it
// (`amctl serve`: each submit's record is sealed onto the chain in the submit's own commit, its
// request digested by the audit interceptor). Goal: throughput ratio ≥ 0.9 at 64 clients.
import { verifySpeed } from "./audit-verify.js";
import { fixed, type SectionReport } from "./format.js";
import { errorCount, formatCells, runCell, runsPreamble, type CellResult } from "./load.js";
import { startServerProcess, stopServerProcess, type BenchServer } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import type { Settings } from "./settings.js";

const PROTOCOL = "grpc";
const GOAL_CLIENTS = 64;
const GOAL_RATIO = 0.9;

export async function auditBenchmark(settings: Settings): Promise<SectionReport> {
  const concurrency = [...new Set([...settings.concurrency, GOAL_CLIENTS])].sort((a, b) => a - b);
  const servers: BenchServer[] = [];
  const cells: CellResult[] = [];
  try {
    const off = await startServerProcess({ withoutAudit: true });
    servers.push(off);
    const on = await startServerProcess();
    servers.push(on);
    process.stderr.write(`bench: audit: without audit pid ${off.pid} at ${off.url}, with audit pid ${on.pid} at ${on.url}\n`);
    let profile = "";
    for (const server of servers) ({ profile } = await createBenchProfile(operationsClient(server)));
    for (const clients of concurrency) {
      const spec = { protocol: PROTOCOL, clients, baseline: "submit", subject: "submit", workerArgs: ["--profile", profile] } as const;
      cells.push(await runCell({ baseline: [off], subject: [on] }, spec, settings, `[audit ${cells.length + 1}/${concurrency.length}]`));
    }
  } finally {
    await Promise.all(servers.map((server) => stopServerProcess(server)));
  }
  const table = formatCells(cells);
  const ratios = cells.map((cell) => ({ clients: cell.clients, ratio: cell.ratios.throughput }));
  const errors = errorCount(cells);
  const goal = ratios.find((row) => row.clients === GOAL_CLIENTS)!;
  const verify = await verifySpeed(settings.auditVerifyRecords);
  return {
    name: "audit",
    lines: [
      "Load (both sides): agentmachine.v1.OperationService/SubmitOperation of a record operation (tool_grant.apply, fresh request_id); durable (SQLite, synchronous=FULL).",
      "Baseline: the server with the audit log off; subject: with it on (one record per submit, in the submit's commit).",
      runsPreamble(settings),
      "",
      table,
      "",
      ...ratios.map(({ clients, ratio }) => `audit on/off submit throughput at ${clients} clients: ${fixed(ratio)}${clients === GOAL_CLIENTS ? ` (goal ≥ ${fixed(GOAL_RATIO)})` : ""}`),
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
      "",
      ...verify.lines,
    ],
    data: { protocol: PROTOCOL, cells, ratios, table, goal: { clients: GOAL_CLIENTS, ratio: GOAL_RATIO, met: goal.ratio >= GOAL_RATIO }, verify: verify.data },
  };
}
