// Closed-loop load runs: N clients of one method over one protocol, spread over load-generator
// processes (bench/load-worker.ts), and cells that run a baseline and a subject method
// alternately, A B, B A, ..., so drift in the machine's speed hits both sides alike.
import { credentialEnv } from "./credentials.js";
import type { BenchMethod, BenchProtocol, WorkerResult } from "./load-worker.js";
import { count, fixed, formatTable, mean, ms, percent } from "./format.js";
import { cpuSeconds, withTimeout, WorkerProcess, type BenchServer } from "./processes.js";
import type { Settings } from "./settings.js";
import { compare, ratio, split, summarize, type Comparison, type LatencySummary } from "./stats.js";

export const methodLabel: Record<BenchMethod, string> = {
  health: "grpc.health.v1.Health/Check",
  validate: "agentmachine.v1.ContractService/ValidateContract",
  submit: "agentmachine.v1.OperationService/SubmitOperation",
  "submit-profile": "agentmachine.v1.OperationService/SubmitOperation",
  evaluate: "agentmachine.v1.PolicyService/EvaluatePolicy",
  authorize: "agentmachine.v1.RuntimeService/AuthorizeCall",
};
export const protocolLabel: Record<BenchProtocol, string> = { grpc: "gRPC", connect: "Connect-binary" };

export interface CellSpec {
  protocol: BenchProtocol;
  clients: number;
  baseline: BenchMethod;
  subject: BenchMethod;
  /** More arguments for every load worker of the cell (e.g. `--profile`). */
  workerArgs?: readonly string[];
  /** The credential every worker of the cell sends, when not the server's root one (Health ignores it). */
  token?: string;
}

interface RunResult {
  /** Window length, seconds (the workers' windows run in parallel). */
  seconds: number;
  latenciesUs: number[];
  calls: number;
  errors: number;
  errorCodes: Record<string, number>;
  /** Server CPU over the window (all the side's servers together), share of one core. */
  serverCpu: number;
  /** Busiest load generator's CPU over the window, share of one core. */
  workerCpu: number;
  workers: number;
}

/**
 * The servers each side of a cell loads: one server for a comparison of two methods; for a
 * comparison of two deployments (e.g. one replica and two), each deployment's servers, which the
 * load workers are spread over round robin.
 */
export interface CellTargets {
  baseline: readonly BenchServer[];
  subject: readonly BenchServer[];
}

/** Runs one side's method on `servers`, from `workerCount` load-generator processes spread over them. */
async function runLoad(servers: readonly BenchServer[], spec: CellSpec, method: BenchMethod, settings: Settings, workerCount: number): Promise<RunResult> {
  const { protocol, clients } = spec;
  const workers = split(clients, workerCount).map(
    (share, index) =>
      new WorkerProcess(
        `load worker (${protocol} ${method} ×${share})`,
        "bench/load-worker.ts",
        [
          "--url",
          servers[index % servers.length]!.url,
          "--protocol",
          protocol,
          "--method",
          method,
          "--concurrency",
          String(share),
          "--warmup",
          String(settings.warmupSeconds),
          "--seconds",
          String(settings.seconds),
          ...(spec.workerArgs ?? []),
        ],
        credentialEnv(spec.token ?? servers[0]!.token),
      ),
  );
  const serversCpu = (): number => servers.reduce((sum, server) => sum + cpuSeconds(server.pid), 0);
  const deadline = (settings.warmupSeconds + settings.seconds) * 1000 + 60_000;
  const killAll = (): void => {
    for (const worker of workers) worker.kill();
  };
  try {
    const { results, serverCpu } = await withTimeout(
      (async () => {
        // Every worker has connected and made one good call: start them together, and sample
        // the server's CPU around the measured window.
        await Promise.all(workers.map((worker) => worker.next<{ ready: true }>()));
        for (const worker of workers) worker.send("go");
        const windowStart = performance.now() + settings.warmupSeconds * 1000;
        const cpu = new Promise<number>((resolve) => {
          setTimeout(
            () => {
              const before = serversCpu();
              const at = performance.now();
              setTimeout(() => resolve((serversCpu() - before) / ((performance.now() - at) / 1000)), settings.seconds * 1000);
            },
            Math.max(0, windowStart - performance.now()),
          );
        });
        const results = await Promise.all(workers.map((worker) => worker.next<WorkerResult>()));
        return { results, serverCpu: await cpu };
      })(),
      deadline,
      `run ${protocol} ${method} ×${clients} took longer than ${deadline / 1000} s`,
    );
    const errorCodes: Record<string, number> = {};
    for (const result of results) {
      for (const [code, calls] of Object.entries(result.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + calls;
    }
    return {
      seconds: settings.seconds,
      latenciesUs: results.flatMap((result) => result.latenciesUs),
      calls: results.reduce((sum, result) => sum + result.calls, 0),
      errors: results.reduce((sum, result) => sum + result.errors, 0),
      errorCodes,
      serverCpu,
      workerCpu: Math.max(...results.map((result) => result.cpu)),
      workers: workers.length,
    };
  } catch (error) {
    killAll();
    throw error;
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
  }
}

export interface MethodResult {
  /** The load worker's name for it (`--method`). */
  kind: BenchMethod;
  method: string;
  summary: LatencySummary;
  errors: number;
  errorCodes: Record<string, number>;
  /** Per round: rps, server CPU and busiest worker's CPU (shares of one core). */
  rounds: { rps: number; p50Ms: number; p99Ms: number; serverCpu: number; workerCpu: number }[];
}

export interface CellResult {
  protocol: BenchProtocol;
  clients: number;
  workers: number;
  baseline: MethodResult;
  subject: MethodResult;
  ratios: Comparison;
  /** subject rps / baseline rps of each round's pair. */
  roundThroughputRatios: number[];
}

function methodResult(method: BenchMethod, runs: RunResult[]): MethodResult {
  const seconds = runs.reduce((sum, run) => sum + run.seconds, 0);
  const summary = summarize(
    runs.flatMap((run) => run.latenciesUs.map((us) => us / 1000)),
    seconds,
  );
  const errorCodes: Record<string, number> = {};
  for (const run of runs) for (const [code, calls] of Object.entries(run.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + calls;
  return {
    kind: method,
    method: methodLabel[method],
    summary,
    errors: runs.reduce((sum, run) => sum + run.errors, 0),
    errorCodes,
    rounds: runs.map((run) => {
      const round = summarize(
        run.latenciesUs.map((us) => us / 1000),
        run.seconds,
      );
      return { rps: round.rps, p50Ms: round.p50Ms, p99Ms: round.p99Ms, serverCpu: run.serverCpu, workerCpu: run.workerCpu };
    }),
  };
}

/** Runs the cell's baseline and subject alternately on `targets` (one server: both sides on it). */
export async function runCell(targets: BenchServer | CellTargets, spec: CellSpec, settings: Settings, progress: string): Promise<CellResult> {
  const servers = "pid" in targets ? { baseline: [targets], subject: [targets] } : targets;
  // Both sides get as many load generators, and a deployment at least one per server.
  const workerCount = Math.max(settings.maxWorkers, servers.baseline.length, servers.subject.length);
  const runs = { baseline: [] as RunResult[], subject: [] as RunResult[] };
  for (let round = 0; round < settings.rounds; round++) {
    // A B, then B A: a drift in the machine's speed during the cell hits both sides alike.
    const order = round % 2 === 0 ? (["baseline", "subject"] as const) : (["subject", "baseline"] as const);
    for (const side of order) {
      const on = servers[side].length > 1 ? ` on ${servers[side].length} servers` : "";
      process.stderr.write(`${progress} ${protocolLabel[spec.protocol]} ×${spec.clients} round ${round + 1}/${settings.rounds} ${spec[side]}${on}… `);
      const run = await runLoad(servers[side], spec, spec[side], settings, workerCount);
      process.stderr.write(`${Math.round(run.calls / run.seconds)} calls/s\n`);
      runs[side].push(run);
    }
  }
  const baseline = methodResult(spec.baseline, runs.baseline);
  const subject = methodResult(spec.subject, runs.subject);
  return {
    protocol: spec.protocol,
    clients: spec.clients,
    workers: runs.baseline[0]?.workers ?? 0,
    baseline,
    subject,
    ratios: compare(subject.summary, baseline.summary),
    roundThroughputRatios: subject.rounds.map((round, index) => ratio(round.rps, baseline.rounds[index]?.rps ?? NaN)),
  };
}

/** subject rps / baseline rps of the cell with this protocol and number of clients, NaN if there is none. */
export function throughputRatio(cells: CellResult[], protocol: BenchProtocol, clients: number): number {
  return cells.find((cell) => cell.protocol === protocol && cell.clients === clients)?.ratios.throughput ?? NaN;
}

export function errorCount(cells: CellResult[]): number {
  return cells.reduce((sum, cell) => sum + cell.baseline.errors + cell.subject.errors, 0);
}

const serverCpu = (result: MethodResult): number => mean(result.rounds.map((round) => round.serverCpu));

/** A first column of the table naming what each row compares, for cells that compare different things. */
export interface RowLabel {
  title: string;
  of: (cell: CellResult) => string;
}

/** The table of cells, with a first column from `label` if given. */
export function formatCells(cells: CellResult[], label?: RowLabel): string {
  const header = [
    ...(label ? [label.title] : []),
    "protocol",
    "clients",
    "base rps",
    "subj rps",
    "rps ratio",
    "base p50",
    "subj p50",
    "p50 ratio",
    "base p99",
    "subj p99",
    "p99 ratio",
    "rounds' rps ratios",
    "server cpu b/s",
    "errors",
  ];
  const rows = cells.map((cell) => [
    ...(label ? [label.of(cell)] : []),
    protocolLabel[cell.protocol],
    String(cell.clients),
    count(cell.baseline.summary.rps),
    count(cell.subject.summary.rps),
    fixed(cell.ratios.throughput),
    ms(cell.baseline.summary.p50Ms),
    ms(cell.subject.summary.p50Ms),
    fixed(cell.ratios.p50),
    ms(cell.baseline.summary.p99Ms),
    ms(cell.subject.summary.p99Ms),
    fixed(cell.ratios.p99),
    cell.roundThroughputRatios.map((value) => fixed(value)).join(" "),
    `${percent(serverCpu(cell.baseline))}/${percent(serverCpu(cell.subject))}`,
    String(cell.baseline.errors + cell.subject.errors),
  ]);
  const text = [...(label ? [0] : []), ...["protocol", "rounds' rps ratios"].map((title) => header.indexOf(title))];
  return formatTable(header, rows, new Set(text));
}

/**
 * One client waiting tens of milliseconds per call while the server's CPU idles is time spent
 * waiting, not computing: classically Nagle's algorithm meeting a delayed ACK (≈ 40 ms on
 * Linux) on a socket without TCP_NODELAY. Say so, since it flattens every ratio towards 1.
 */
export function idleLatencyNotes(cells: CellResult[]): string[] {
  return cells
    .filter((cell) => cell.clients === 1)
    .filter((cell) => cell.baseline.summary.p50Ms >= 20 && serverCpu(cell.baseline) < 0.25)
    .map(
      (cell) =>
        `note: ${protocolLabel[cell.protocol]} with 1 client: baseline p50 ${ms(cell.baseline.summary.p50Ms)} ms at ` +
        `${percent(serverCpu(cell.baseline))} server CPU — calls wait rather than compute ` +
        `(TCP_NODELAY not set on a socket? Nagle + delayed ACK ≈ 40 ms); ratios are then close to 1 whatever the handler costs.`,
    );
}

/**
 * The header lines above a table of cells. `subject` describes the subject, or is one line per
 * subject for a table with a subject column (formatCells with a `subject` label).
 */
export function cellsPreamble(settings: Settings, baseline: BenchMethod, subject: string | readonly string[]): string[] {
  return [
    `Baseline (base): ${methodLabel[baseline]}`,
    ...(typeof subject === "string"
      ? [`Subject  (subj): ${subject}`]
      : ["Subject  (subj): per row, named in the subject column:", ...subject.map((line) => `  ${line}`)]),
    runsPreamble(settings),
  ];
}

/** How the load runs of a table were made. */
export function runsPreamble(settings: Settings): string {
  return (
    `HTTP/2, one connection per load-generator process; ${settings.warmupSeconds} s warm-up + ${settings.seconds} s measured per run, ` +
    `${settings.rounds} A/B rounds per row; latencies in ms; ratio = subject / baseline (throughput: higher is better; latency: lower is better).`
  );
}
