// `npm run bench`: load benchmarks of the server, each against a baseline measured in the same
// run, printed as ratios (on a shared, noisy machine the ratios mean more than the absolute
// numbers, which are printed too). See bench/README.md.
//
//   contract    ValidateContract vs Health/Check, per protocol and number of clients
//   operations  durable SubmitOperation vs Health/Check over gRPC at 1, 16, 64 clients
//   governance  EvaluatePolicy, AuthorizeCall and gated and ungated submits vs Health/Check over gRPC
//   idle        server memory per idle WatchEvents subscriber (10,000 of them)
//   fanout      events/s delivered to 1,000 subscribers vs to 1
//   watched     durable submits/s while 1,000 subscribers watch every event vs none
//   replay      replay of 100,000 events from sequence 0 vs streaming them from memory
//   replay-storm  health p99 while 100 replays over 50,000 events run vs idle health p99
//   replicas    submit throughput: 2 replicas on PostgreSQL vs 1, and PostgreSQL vs SQLite
//   workers     executions/s dispatched to 4 remote worker processes vs the embedded executor,
//               and the latency a lease round trip adds
//   audit       durable submit throughput with the audit log on vs off
//   telemetry   durable submit throughput with metrics and traces on vs off
//   sandbox     latency (p50, p99) and executions/s of `true`, sandboxed vs --unsafe-no-sandbox
//   model-gateway  tokens/s streamed through the model gateway vs directly from a stand-in
//               provider, and the latency the gateway adds per call (p50, p99)
//
// BENCH_ONLY selects some: a comma-separated list of these names, `streams` (idle, fanout,
// watched, replay, replay-storm) or `all` (the default). Every section starts its own server (`amctl serve`) and load
// processes, so none shares an event loop with the thing it measures, and every child process is
// killed on exit, on error and on Ctrl-C. The other variables are in bench/settings.ts.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join, relative } from "node:path";
import { auditBenchmark } from "./audit.js";
import { contractBenchmark } from "./contract.js";
import type { SectionReport } from "./format.js";
import { governanceBenchmark } from "./governance.js";
import { operationsBenchmark } from "./operations.js";
import { killAll, repoRoot } from "./processes.js";
import { replicasBenchmark } from "./replicas.js";
import { modelGatewayBenchmark } from "./model-gateway.js";
import { sandboxBenchmark } from "./sandbox.js";
import { telemetryBenchmark } from "./telemetry.js";
import { readSettings, type Benchmark, type Settings } from "./settings.js";
import { fanoutBenchmark, idleBenchmark, replayBenchmark, watchedBenchmark } from "./streams.js";
import { replayStormBenchmark } from "./replay-storm.js";
import { workersBenchmark } from "./workers.js";

const resultsPath = join(repoRoot, "bench/results/latest.json");

const run: Record<Benchmark, (settings: Settings) => Promise<SectionReport>> = {
  contract: contractBenchmark,
  operations: operationsBenchmark,
  governance: governanceBenchmark,
  idle: idleBenchmark,
  fanout: fanoutBenchmark,
  watched: watchedBenchmark,
  replay: replayBenchmark,
  "replay-storm": replayStormBenchmark,
  replicas: replicasBenchmark,
  workers: workersBenchmark,
  audit: auditBenchmark,
  telemetry: telemetryBenchmark,
  sandbox: sandboxBenchmark,
  "model-gateway": modelGatewayBenchmark,
};

function gitCommit(): string | null {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

function writeResults(report: object): void {
  mkdirSync(join(repoRoot, "bench/results"), { recursive: true });
  // NaN is not JSON; write null instead.
  writeFileSync(resultsPath, `${JSON.stringify(report, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? null : value), 2)}\n`);
}

async function main(): Promise<void> {
  const settings = readSettings();
  process.stderr.write(`bench: ${settings.only.join(", ")}; ${cpus().length} CPUs, Node ${process.version}\n`);
  const started = new Date();
  const sections: Record<string, unknown> = {};
  const report = {
    generatedAt: started.toISOString(),
    startedAt: started.toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    settings,
    sections,
  };
  for (const benchmark of settings.only) {
    const section = await run[benchmark](settings);
    // Printed as each section ends, so a later failure does not lose it.
    process.stdout.write(["", `== ${section.name}`, ...section.lines, ""].join("\n"));
    sections[section.name] = section.data;
    report.generatedAt = new Date().toISOString();
    writeResults(report);
  }
  process.stderr.write(`bench: results written to ${relative(process.cwd(), resultsPath)}\n`);
}

try {
  await main();
  process.exit(0);
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  killAll();
  process.exit(1);
}
