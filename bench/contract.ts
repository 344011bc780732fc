// The contract benchmark: ContractService/ValidateContract (with
// examples/contracts/local-execution.json) against the baseline grpc.health.v1.Health/Check, per
// protocol and number of concurrent clients. Goal: throughput ratio ≥ 0.5 at 64 clients.
import type { SectionReport } from "./format.js";
import { fixed } from "./format.js";
import { cellsPreamble, errorCount, formatCells, idleLatencyNotes, methodLabel, protocolLabel, runCell, throughputRatio, type CellResult } from "./load.js";
import { withServer } from "./processes.js";
import type { Settings } from "./settings.js";

const GOAL_CLIENTS = 64;
const GOAL_RATIO = 0.5;

export async function contractBenchmark(settings: Settings): Promise<SectionReport> {
  const cells: CellResult[] = [];
  await withServer("contract", async (server) => {
    const cellCount = settings.protocols.length * settings.concurrency.length;
    for (const protocol of settings.protocols) {
      for (const clients of settings.concurrency) {
        cells.push(
          await runCell(server, { protocol, clients, baseline: "health", subject: "validate" }, settings, `[contract ${cells.length + 1}/${cellCount}]`),
        );
      }
    }
  });
  const goals = settings.protocols.map((protocol) => {
    const value = throughputRatio(cells, protocol, GOAL_CLIENTS);
    return {
      protocol,
      clients: GOAL_CLIENTS,
      goal: GOAL_RATIO,
      ratio: value,
      met: Number.isFinite(value) ? value >= GOAL_RATIO : null,
      line: `${protocolLabel[protocol]}: ValidateContract throughput ratio at ${GOAL_CLIENTS} clients: ${fixed(value)} (goal ≥ ${GOAL_RATIO})`,
    };
  });
  const table = formatCells(cells);
  const errors = errorCount(cells);
  return {
    name: "contract",
    lines: [
      ...cellsPreamble(settings, "health", `${methodLabel.validate} with examples/contracts/local-execution.json as json`),
      "",
      table,
      "",
      ...goals.map((goal) => goal.line),
      ...idleLatencyNotes(cells),
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
    ],
    data: {
      baseline: methodLabel.health,
      subject: methodLabel.validate,
      document: "examples/contracts/local-execution.json",
      cells,
      goals: goals.map(({ line: _line, ...goal }) => goal),
      table,
    },
  };
}
