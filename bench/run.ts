// `npm run bench`: throughput and latency of ContractService/ValidateContract against the
// baseline grpc.health.v1.Health/Check, per protocol and number of concurrent clients.
//
// The server runs as its own process (`amctl serve`), the load generators as others
// (bench/load-worker.ts), so neither shares an event loop with the thing it measures. Each
// cell (protocol × clients) runs baseline and subject alternately, A B B A A B ..., and the
// table compares them: on a shared, noisy machine the ratios mean more than the absolute numbers.
// See bench/README.md.
//
// Environment (all optional):
//   BENCH_SECONDS          measured seconds per run (default 3)
//   BENCH_WARMUP_SECONDS   unmeasured seconds before each run's window (default 1)
//   BENCH_ROUNDS           A/B pairs per cell (default 2)
//   BENCH_CONCURRENCY      comma-separated numbers of concurrent clients (default 1,16,64)
//   BENCH_PROTOCOLS        comma-separated, from grpc,connect (default grpc,connect)
//   BENCH_WORKERS          most load-generator processes per run (default: CPUs − 1, at least
//                          1, leaving a core to the single-threaded server); the clients of a
//                          run are split evenly over min(clients, BENCH_WORKERS) processes,
//                          each with its own HTTP/2 connection
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import type { BenchMethod, BenchProtocol, WorkerResult } from "./load-worker.js";
import { compare, ratio, split, summarize, type Comparison, type LatencySummary } from "./stats.js";

const repoRoot = join(import.meta.dirname, "..");
const resultsPath = join(repoRoot, "bench/results/latest.json");
const GOAL_CLIENTS = 64;
const GOAL_RATIO = 0.5;

const methodLabel: Record<BenchMethod, string> = {
  health: "grpc.health.v1.Health/Check",
  validate: "agentmachine.v1.ContractService/ValidateContract",
};
const protocolLabel: Record<BenchProtocol, string> = { grpc: "gRPC", connect: "Connect-binary" };

// ---------------------------------------------------------------------------------------------
// Settings

interface Settings {
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  concurrency: number[];
  protocols: BenchProtocol[];
  maxWorkers: number;
}

function envNumber(name: string, fallback: number, check: (value: number) => boolean): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === "") return fallback;
  const value = Number(text);
  if (!check(value)) throw new Error(`${name} is not valid: "${text}"`);
  return value;
}

function envList(name: string, fallback: string): string[] {
  return (process.env[name]?.trim() || fallback).split(",").map((item) => item.trim()).filter(Boolean);
}

function readSettings(): Settings {
  const positiveInteger = (value: number): boolean => Number.isSafeInteger(value) && value > 0;
  const protocols = envList("BENCH_PROTOCOLS", "grpc,connect");
  for (const protocol of protocols) {
    if (protocol !== "grpc" && protocol !== "connect") throw new Error(`BENCH_PROTOCOLS: unknown protocol "${protocol}" (grpc, connect)`);
  }
  const concurrency = envList("BENCH_CONCURRENCY", "1,16,64").map(Number);
  if (!concurrency.every(positiveInteger)) throw new Error(`BENCH_CONCURRENCY must be positive integers, got "${process.env.BENCH_CONCURRENCY}"`);
  return {
    seconds: envNumber("BENCH_SECONDS", 3, (value) => value > 0 && value <= 600),
    warmupSeconds: envNumber("BENCH_WARMUP_SECONDS", 1, (value) => value >= 0 && value <= 600),
    rounds: envNumber("BENCH_ROUNDS", 2, positiveInteger),
    concurrency,
    protocols: protocols as BenchProtocol[],
    maxWorkers: envNumber("BENCH_WORKERS", Math.max(1, cpus().length - 1), positiveInteger),
  };
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed when this process ends, however it ends.

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

function killAll(signal: NodeJS.Signals = "SIGKILL"): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  }
}

process.on("exit", () => killAll());
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping\n`);
    killAll();
    process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const)[signal]);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

// ---------------------------------------------------------------------------------------------
// The server

interface BenchServer {
  url: string;
  child: ChildProcess;
  dataDir: string;
  stderr: () => string;
}

async function startServerProcess(): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "amctl-bench-"));
  const child = track(
    spawn(
      process.execPath,
      [
        join(repoRoot, "bin/amctl.mjs"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dataDir,
        // info logs only lifecycle lines ("serving"); per-call lines are debug.
        "--log-level",
        "info",
        "--shutdown-grace-ms",
        "1000",
      ],
      { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] },
    ),
  );
  let stderr = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 30 s:\n${stderr}`)), 30_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
      if (stderr.length > 1_000_000) stderr = stderr.slice(-100_000);
      for (const line of stderr.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          const entry = JSON.parse(line) as { msg?: unknown; url?: unknown };
          if (entry.msg === "serving" && typeof entry.url === "string") {
            clearTimeout(timer);
            resolve(entry.url);
            return;
          }
        } catch {
          // A partial line; the rest is still to come.
        }
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before serving:\n${stderr}`));
    });
  });
  if (new URL(url).hostname !== "127.0.0.1") throw new Error(`server is not on 127.0.0.1: ${url}`);
  return { url, child, dataDir, stderr: () => stderr };
}

async function stopServerProcess(server: BenchServer): Promise<void> {
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 5000);
  await exited(server.child);
  clearTimeout(timer);
  rmSync(server.dataDir, { recursive: true, force: true });
}

/** CPU seconds used so far by a process (Linux /proc), or NaN where unavailable. */
const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// One run: N clients of one method over one protocol, spread over worker processes.

interface RunResult {
  method: BenchMethod;
  /** Window length, seconds (the workers' windows run in parallel). */
  seconds: number;
  latenciesUs: number[];
  calls: number;
  errors: number;
  errorCodes: Record<string, number>;
  /** Server CPU over the window, share of one core. */
  serverCpu: number;
  /** Busiest load generator's CPU over the window, share of one core. */
  workerCpu: number;
  workers: number;
}

interface Worker {
  child: ChildProcess;
  ready: Promise<void>;
  result: Promise<WorkerResult>;
}

function startWorker(url: string, protocol: BenchProtocol, method: BenchMethod, concurrency: number, settings: Settings): Worker {
  const args = [
    "--import",
    "tsx",
    join(repoRoot, "bench/load-worker.ts"),
    "--url",
    url,
    "--protocol",
    protocol,
    "--method",
    method,
    "--concurrency",
    String(concurrency),
    "--warmup",
    String(settings.warmupSeconds),
    "--seconds",
    String(settings.seconds),
  ];
  const child = track(spawn(process.execPath, args, { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"] }));
  // Writing "go" to a worker that has just died must not crash the orchestrator (EPIPE).
  child.stdin!.on("error", () => {});
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const lines = createInterface({ input: child.stdout! });
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const result = new Promise<WorkerResult>((resolve, reject) => {
    let last: WorkerResult | undefined;
    lines.on("line", (line) => {
      const message = JSON.parse(line) as { ready?: boolean } & Partial<WorkerResult>;
      if (message.ready) markReady();
      else last = message as WorkerResult;
    });
    child.once("exit", (code, signal) => {
      if (code === 0 && last) resolve(last);
      else reject(new Error(`load worker (${protocol} ${method} ×${concurrency}) failed (${code ?? signal}):\n${stderr.trim()}`));
    });
  });
  // Seen as handled: when one worker of a run fails, the run fails with its error, and the
  // others' failures (they are killed) are not news.
  result.catch(() => {});
  // A worker that dies before it is ready must not leave `ready` pending forever.
  return { child, ready: Promise.race([ready, result.then(() => {})]), result };
}

async function runLoad(server: BenchServer, protocol: BenchProtocol, method: BenchMethod, clients: number, settings: Settings): Promise<RunResult> {
  const shares = split(clients, settings.maxWorkers);
  const workers = shares.map((share) => startWorker(server.url, protocol, method, share, settings));
  const deadline = (settings.warmupSeconds + settings.seconds) * 1000 + 60_000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const worker of workers) worker.child.kill("SIGKILL");
      reject(new Error(`run ${protocol} ${method} ×${clients} took longer than ${deadline / 1000} s`));
    }, deadline);
  });
  try {
    await Promise.race([Promise.all(workers.map((worker) => worker.ready)), timeout]);
    // All connected: start together, and sample the server's CPU around the measured window.
    for (const worker of workers) worker.child.stdin!.write("go\n");
    const windowStart = performance.now() + settings.warmupSeconds * 1000;
    const cpu = new Promise<number>((resolve) => {
      setTimeout(() => {
        const before = cpuSeconds(server.child.pid);
        const at = performance.now();
        setTimeout(() => resolve((cpuSeconds(server.child.pid) - before) / ((performance.now() - at) / 1000)), settings.seconds * 1000);
      }, Math.max(0, windowStart - performance.now()));
    });
    const results = await Promise.race([Promise.all(workers.map((worker) => worker.result)), timeout]);
    const serverCpu = await cpu;
    const errorCodes: Record<string, number> = {};
    for (const result of results) {
      for (const [code, count] of Object.entries(result.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + count;
    }
    return {
      method,
      seconds: settings.seconds,
      latenciesUs: results.flatMap((result) => result.latenciesUs),
      calls: results.reduce((sum, result) => sum + result.calls, 0),
      errors: results.reduce((sum, result) => sum + result.errors, 0),
      errorCodes,
      serverCpu,
      workerCpu: Math.max(...results.map((result) => result.cpu)),
      workers: workers.length,
    };
  } finally {
    clearTimeout(timer);
    for (const worker of workers) worker.child.stdin?.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Cells: baseline and subject alternately, then summarised.

interface MethodResult {
  method: string;
  summary: LatencySummary;
  errors: number;
  errorCodes: Record<string, number>;
  /** Per round: rps, server CPU and busiest worker's CPU (shares of one core). */
  rounds: { rps: number; p50Ms: number; p99Ms: number; serverCpu: number; workerCpu: number }[];
}

interface CellResult {
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
  for (const run of runs) for (const [code, count] of Object.entries(run.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + count;
  return {
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

async function runCell(server: BenchServer, protocol: BenchProtocol, clients: number, settings: Settings, progress: string): Promise<CellResult> {
  const runs: Record<BenchMethod, RunResult[]> = { health: [], validate: [] };
  for (let round = 0; round < settings.rounds; round++) {
    // A B, then B A: a drift in the machine's speed during the cell hits both sides alike.
    const order: BenchMethod[] = round % 2 === 0 ? ["health", "validate"] : ["validate", "health"];
    for (const method of order) {
      process.stderr.write(`${progress} ${protocolLabel[protocol]} ×${clients} round ${round + 1}/${settings.rounds} ${method}… `);
      const run = await runLoad(server, protocol, method, clients, settings);
      process.stderr.write(`${Math.round(run.calls / run.seconds)} calls/s\n`);
      runs[method].push(run);
    }
  }
  const baseline = methodResult("health", runs.health);
  const subject = methodResult("validate", runs.validate);
  return {
    protocol,
    clients,
    workers: runs.health[0]?.workers ?? 0,
    baseline,
    subject,
    ratios: compare(subject.summary, baseline.summary),
    roundThroughputRatios: subject.rounds.map((round, index) => ratio(round.rps, baseline.rounds[index]?.rps ?? NaN)),
  };
}

// ---------------------------------------------------------------------------------------------
// Output

const fixed = (value: number, digits = 2): string => (Number.isFinite(value) ? value.toFixed(digits) : "n/a");
const rps = (value: number): string => (Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "n/a");
const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(value < 10 ? 3 : 1) : "n/a");
const percent = (value: number): string => (Number.isFinite(value) ? `${Math.round(value * 100)}%` : "n/a");

function formatTable(cells: CellResult[]): string {
  const header = [
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
    protocolLabel[cell.protocol],
    String(cell.clients),
    rps(cell.baseline.summary.rps),
    rps(cell.subject.summary.rps),
    fixed(cell.ratios.throughput),
    ms(cell.baseline.summary.p50Ms),
    ms(cell.subject.summary.p50Ms),
    fixed(cell.ratios.p50),
    ms(cell.baseline.summary.p99Ms),
    ms(cell.subject.summary.p99Ms),
    fixed(cell.ratios.p99),
    cell.roundThroughputRatios.map((value) => fixed(value)).join(" "),
    `${percent(mean(cell.baseline.rounds.map((round) => round.serverCpu)))}/${percent(mean(cell.subject.rounds.map((round) => round.serverCpu)))}`,
    String(cell.baseline.errors + cell.subject.errors),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  // Text columns left-aligned, numbers right-aligned.
  const leftAligned = new Set([0, 11]);
  const format = (row: string[]): string =>
    row
      .map((text, column) => (leftAligned.has(column) ? text.padEnd(widths[column] ?? 0) : text.padStart(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((width) => "-".repeat(width)).join("  ");
  return [format(header), rule, ...rows.map(format)].join("\n");
}

function mean(values: number[]): number {
  const finite = values.filter(Number.isFinite);
  return finite.length === 0 ? NaN : finite.reduce((sum, value) => sum + value, 0) / finite.length;
}

function goalLines(cells: CellResult[], protocols: BenchProtocol[]): { protocol: BenchProtocol; ratio: number; met: boolean | null; line: string }[] {
  return protocols.map((protocol) => {
    const cell = cells.find((candidate) => candidate.protocol === protocol && candidate.clients === GOAL_CLIENTS);
    const value = cell ? cell.ratios.throughput : NaN;
    return {
      protocol,
      ratio: value,
      met: Number.isFinite(value) ? value >= GOAL_RATIO : null,
      line: `${protocolLabel[protocol]}: ValidateContract throughput ratio at ${GOAL_CLIENTS} clients: ${fixed(value)} (goal ≥ ${GOAL_RATIO})`,
    };
  });
}

/**
 * One client waiting tens of milliseconds per call while the server's CPU idles is time spent
 * waiting, not computing: classically Nagle's algorithm meeting a delayed ACK (≈ 40 ms on
 * Linux) on a socket without TCP_NODELAY. Say so, since it flattens every ratio towards 1.
 */
function idleLatencyNotes(cells: CellResult[]): string[] {
  return cells
    .filter((cell) => cell.clients === 1)
    .filter((cell) => cell.baseline.summary.p50Ms >= 20 && mean(cell.baseline.rounds.map((round) => round.serverCpu)) < 0.25)
    .map(
      (cell) =>
        `note: ${protocolLabel[cell.protocol]} with 1 client: baseline p50 ${ms(cell.baseline.summary.p50Ms)} ms at ` +
        `${percent(mean(cell.baseline.rounds.map((round) => round.serverCpu)))} server CPU — calls wait rather than compute ` +
        `(TCP_NODELAY not set on a socket? Nagle + delayed ACK ≈ 40 ms); ratios are then close to 1 whatever the handler costs.`,
    );
}

function gitCommit(): string | null {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const settings = readSettings();
  const cellCount = settings.protocols.length * settings.concurrency.length;
  const runSeconds = settings.warmupSeconds + settings.seconds + 1;
  process.stderr.write(
    `bench: ${cellCount} cells × ${settings.rounds} rounds × 2 methods, ${settings.warmupSeconds} s warm-up + ${settings.seconds} s measured each ` +
      `(≈ ${Math.ceil((cellCount * settings.rounds * 2 * runSeconds) / 60)} min); ${cpus().length} CPUs, Node ${process.version}\n`,
  );
  const server = await startServerProcess();
  process.stderr.write(`bench: server pid ${server.child.pid} at ${server.url}\n`);
  const cells: CellResult[] = [];
  const started = new Date();
  try {
    let index = 0;
    for (const protocol of settings.protocols) {
      for (const clients of settings.concurrency) {
        index++;
        cells.push(await runCell(server, protocol, clients, settings, `[${index}/${cellCount}]`));
      }
    }
  } finally {
    await stopServerProcess(server);
  }

  const goals = goalLines(cells, settings.protocols);
  const table = formatTable(cells);
  const lines = [
    "",
    `Baseline (base): ${methodLabel.health}`,
    `Subject  (subj): ${methodLabel.validate} with examples/contracts/local-execution.json as json`,
    `HTTP/2, one connection per load-generator process; ${settings.warmupSeconds} s warm-up + ${settings.seconds} s measured per run, ` +
      `${settings.rounds} A/B rounds per row; latencies in ms; ratio = subject / baseline (throughput: higher is better; latency: lower is better).`,
    "",
    table,
    "",
    ...goals.map((goal) => goal.line),
    ...idleLatencyNotes(cells),
    "",
  ];
  process.stdout.write(lines.join("\n"));

  mkdirSync(join(repoRoot, "bench/results"), { recursive: true });
  const report = {
    generatedAt: new Date().toISOString(),
    startedAt: started.toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    settings,
    baseline: methodLabel.health,
    subject: methodLabel.validate,
    document: "examples/contracts/local-execution.json",
    cells,
    goals: goals.map(({ protocol, ratio: value, met }) => ({ protocol, clients: GOAL_CLIENTS, goal: GOAL_RATIO, ratio: value, met })),
    table,
  };
  // NaN is not JSON; write null instead.
  writeFileSync(resultsPath, `${JSON.stringify(report, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? null : value), 2)}\n`);
  process.stderr.write(`bench: results written to ${relative(process.cwd(), resultsPath)}\n`);

  const errors = cells.reduce((sum, cell) => sum + cell.baseline.errors + cell.subject.errors, 0);
  if (errors > 0) process.stderr.write(`bench: WARNING ${errors} calls failed; see errorCodes in the results\n`);
}

try {
  await main();
  process.exit(0);
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  killAll();
  process.exit(1);
}
