// Durable submits on two servers that differ in one thing (the audit log, metrics and traces…):
// the operations benchmark's SubmitOperation of a record operation (tool_grant.apply, fresh
// request_id) over gRPC, in A/B runs of the same load, at every BENCH_CONCURRENCY count and the
// goal's. Both servers run at once, so neither is measured warmer than the other.
import { fixed } from "./format.js";
import { errorCount, formatCells, runCell, type CellResult } from "./load.js";
import { stopServerProcess, type BenchServer } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import type { Settings } from "./settings.js";
import { cpuPerCallUs } from "./stats.js";

const PROTOCOL = "grpc";

export interface SubmitComparison {
  protocol: typeof PROTOCOL;
  cells: CellResult[];
  table: string;
  ratios: { clients: number; ratio: number }[];
  errors: number;
  goal: { clients: number; ratio: number; met: boolean };
  /** `<label> submit throughput at N clients: R`, the goal's row with its goal. */
  ratioLines: string[];
  /**
   * The server's CPU per submit of each side at each client count, µs: what the subject's
   * difference costs, which unlike the throughput ratio hardly depends on what else the machine
   * runs meanwhile.
   */
  cpuPerSubmitUs: { clients: number; baseline: number; subject: number }[];
  /** `server CPU per submit at N clients: B µs without, S µs with (+D µs)`. */
  cpuLines: string[];
}

export interface SubmitSides {
  /** Starts the baseline's server (stopped, and its data dir removed, at the end). */
  baseline: () => Promise<BenchServer>;
  subject: () => Promise<BenchServer>;
}

export async function compareSubmits(
  name: string,
  label: string,
  start: SubmitSides,
  goal: { clients: number; ratio: number },
  settings: Settings,
): Promise<SubmitComparison> {
  const concurrency = [...new Set([...settings.concurrency, goal.clients])].sort((a, b) => a - b);
  const servers: BenchServer[] = [];
  const cells: CellResult[] = [];
  try {
    const baseline = await start.baseline();
    servers.push(baseline);
    const subject = await start.subject();
    servers.push(subject);
    process.stderr.write(`bench: ${name}: baseline pid ${baseline.pid} at ${baseline.url}, subject pid ${subject.pid} at ${subject.url}\n`);
    let profile = "";
    for (const server of servers) ({ profile } = await createBenchProfile(operationsClient(server)));
    for (const clients of concurrency) {
      const spec = { protocol: PROTOCOL, clients, baseline: "submit", subject: "submit", workerArgs: ["--profile", profile] } as const;
      cells.push(await runCell({ baseline: [baseline], subject: [subject] }, spec, settings, `[${name} ${cells.length + 1}/${concurrency.length}]`));
    }
  } finally {
    await Promise.all(servers.map((server) => stopServerProcess(server)));
  }
  const ratios = cells.map((cell) => ({ clients: cell.clients, ratio: cell.ratios.throughput }));
  const atGoal = ratios.find((row) => row.clients === goal.clients)!;
  const cpuPerSubmitUs = cells.map((cell) => ({
    clients: cell.clients,
    baseline: cpuPerCallUs(cell.baseline.rounds),
    subject: cpuPerCallUs(cell.subject.rounds),
  }));
  return {
    protocol: PROTOCOL,
    cells,
    table: formatCells(cells),
    ratios,
    errors: errorCount(cells),
    goal: { ...goal, met: atGoal.ratio >= goal.ratio },
    ratioLines: ratios.map(
      ({ clients, ratio }) =>
        `${label} submit throughput at ${clients} clients: ${fixed(ratio)}${clients === goal.clients ? ` (goal ≥ ${fixed(goal.ratio)})` : ""}`,
    ),
    cpuPerSubmitUs,
    cpuLines: cpuPerSubmitUs.map(
      ({ clients, baseline, subject }) =>
        `server CPU per submit at ${clients} clients: ${Math.round(baseline)} µs baseline, ${Math.round(subject)} µs subject (${subject >= baseline ? "+" : "−"}${Math.round(Math.abs(subject - baseline))} µs)`,
    ),
  };
}
