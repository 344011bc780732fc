// The operations benchmark: durable OperationService/SubmitOperation of record operations
// against the baseline grpc.health.v1.Health/Check, over gRPC, per number of concurrent clients.
// The server runs with its defaults (SQLite WAL, synchronous=FULL, group commit), so every
// answered submit is on disk. Goal: throughput ratio ≥ 0.30 at 64 clients.
import { fixed, type SectionReport } from "./format.js";
import { cellsPreamble, errorCount, formatCells, idleLatencyNotes, methodLabel, runCell, throughputRatio, type CellResult } from "./load.js";
import { withServer } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import type { Settings } from "./settings.js";

const GOAL_CLIENTS = 64;
const GOAL_RATIO = 0.3;
const PROTOCOL = "grpc";

export async function operationsBenchmark(settings: Settings): Promise<SectionReport> {
  const cells: CellResult[] = [];
  // The goal's row is measured whatever BENCH_CONCURRENCY says.
  const concurrency = [...new Set([...settings.concurrency, GOAL_CLIENTS])].sort((a, b) => a - b);
  await withServer("operations", async (server) => {
    const { profile } = await createBenchProfile(operationsClient(server));
    for (const clients of concurrency) {
      const spec = { protocol: PROTOCOL, clients, baseline: "health", subject: "submit", workerArgs: ["--profile", profile] } as const;
      cells.push(await runCell(server, spec, settings, `[operations ${cells.length + 1}/${concurrency.length}]`));
    }
  });
  const ratios = concurrency.map((clients) => ({ clients, ratio: throughputRatio(cells, PROTOCOL, clients) }));
  const table = formatCells(cells);
  const errors = errorCount(cells);
  return {
    name: "operations",
    lines: [
      ...cellsPreamble(
        settings,
        "health",
        `${methodLabel.submit} of a record operation (tool_grant.apply, fresh request_id) in one profile; durable (synchronous=FULL)`,
      ),
      "",
      table,
      "",
      ...ratios.map(
        ({ clients, ratio }) =>
          `submit/health throughput at ${clients} clients: ${fixed(ratio)}${clients === GOAL_CLIENTS ? ` (goal ≥ ${fixed(GOAL_RATIO)})` : ""}`,
      ),
      ...idleLatencyNotes(cells),
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
    ],
    data: {
      baseline: methodLabel.health,
      subject: methodLabel.submit,
      protocol: PROTOCOL,
      cells,
      ratios,
      goal: { clients: GOAL_CLIENTS, ratio: GOAL_RATIO, met: ratios.find((row) => row.clients === GOAL_CLIENTS)!.ratio >= GOAL_RATIO },
      table,
    },
  };
}
