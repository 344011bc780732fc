// The benchmark's settings, read once from the environment. See bench/README.md for each variable.
import { cpus } from "node:os";
import type { BenchProtocol } from "./load-worker.js";

/** The benchmarks, by the name BENCH_ONLY selects them with. */
export const benchmarks = [
  "contract",
  "operations",
  "governance",
  "idle",
  "fanout",
  "watched",
  "replay",
  "replay-storm",
  "replicas",
  "workers",
  "audit",
  "telemetry",
  "sandbox",
  "model-gateway",
] as const;
export type Benchmark = (typeof benchmarks)[number];

/** Names that select several benchmarks at once. */
const groups: Record<string, readonly Benchmark[]> = {
  all: benchmarks,
  streams: ["idle", "fanout", "watched", "replay", "replay-storm"],
};

export interface Settings {
  only: Benchmark[];
  /** Load runs (contract, operations, governance, replicas): measured and warm-up seconds per run, A/B rounds per row. */
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  concurrency: number[];
  protocols: BenchProtocol[];
  /** Most load-generator processes per run. */
  maxWorkers: number;
  /** Streams: idle subscribers, how many share one HTTP/2 connection, and subscriber processes. */
  subscribers: number;
  streamsPerConnection: number;
  streamWorkers: number;
  /** Least seconds to wait before reading the server's memory, and most seconds to wait for a stable reading. */
  settleSeconds: number;
  /** Fan-out: subscribers of the wide run (the narrow run has one) and record operations per burst. */
  fanoutSubscribers: number;
  fanoutOperations: number;
  /** Replay: events streamed from sequence 0. */
  replayEvents: number;
  /** Replay storm: events of the history, and replays running at once. */
  stormEvents: number;
  stormReplays: number;
  /** Workers: executions per throughput run. */
  workerTasks: number;
  /** Audit: records of the exported log whose verification is timed. */
  auditVerifyRecords: number;
}

function envNumber(name: string, fallback: number, check: (value: number) => boolean): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === "") return fallback;
  const value = Number(text);
  if (!check(value)) throw new Error(`${name} is not valid: "${text}"`);
  return value;
}

function envList(name: string, fallback: string): string[] {
  return (process.env[name]?.trim() || fallback)
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

function readOnly(): Benchmark[] {
  const selected = new Set<Benchmark>();
  for (const name of envList("BENCH_ONLY", "all")) {
    const group = groups[name] ?? (benchmarks.includes(name as Benchmark) ? [name as Benchmark] : undefined);
    if (group === undefined) throw new Error(`BENCH_ONLY: unknown benchmark "${name}" (${[...Object.keys(groups), ...benchmarks].join(", ")})`);
    for (const benchmark of group) selected.add(benchmark);
  }
  // Always in the documented order, whatever the order of the list.
  return benchmarks.filter((benchmark) => selected.has(benchmark));
}

export function readSettings(): Settings {
  const positiveInteger = (value: number): boolean => Number.isSafeInteger(value) && value > 0;
  const protocols = envList("BENCH_PROTOCOLS", "grpc,connect");
  for (const protocol of protocols) {
    if (protocol !== "grpc" && protocol !== "connect") throw new Error(`BENCH_PROTOCOLS: unknown protocol "${protocol}" (grpc, connect)`);
  }
  const concurrency = envList("BENCH_CONCURRENCY", "1,16,64").map(Number);
  if (!concurrency.every(positiveInteger)) throw new Error(`BENCH_CONCURRENCY must be positive integers, got "${process.env.BENCH_CONCURRENCY}"`);
  return {
    only: readOnly(),
    seconds: envNumber("BENCH_SECONDS", 3, (value) => value > 0 && value <= 600),
    warmupSeconds: envNumber("BENCH_WARMUP_SECONDS", 1, (value) => value >= 0 && value <= 600),
    rounds: envNumber("BENCH_ROUNDS", 2, positiveInteger),
    concurrency,
    protocols: protocols as BenchProtocol[],
    maxWorkers: envNumber("BENCH_WORKERS", Math.max(1, cpus().length - 1), positiveInteger),
    subscribers: envNumber("BENCH_SUBSCRIBERS", 10_000, positiveInteger),
    streamsPerConnection: envNumber("BENCH_STREAMS_PER_CONNECTION", 100, positiveInteger),
    streamWorkers: envNumber("BENCH_STREAM_WORKERS", 2, positiveInteger),
    settleSeconds: envNumber("BENCH_SETTLE_SECONDS", 5, (value) => value >= 0 && value <= 600),
    fanoutSubscribers: envNumber("BENCH_FANOUT_SUBSCRIBERS", 1000, positiveInteger),
    fanoutOperations: envNumber("BENCH_FANOUT_OPERATIONS", 500, positiveInteger),
    replayEvents: envNumber("BENCH_REPLAY_EVENTS", 100_000, (value) => Number.isSafeInteger(value) && value >= 2),
    stormEvents: envNumber("BENCH_STORM_EVENTS", 50_000, (value) => Number.isSafeInteger(value) && value >= 2),
    stormReplays: envNumber("BENCH_STORM_REPLAYS", 100, (value) => Number.isSafeInteger(value) && value >= 1),
    workerTasks: envNumber("BENCH_WORKER_TASKS", 200, positiveInteger),
    auditVerifyRecords: envNumber("BENCH_AUDIT_VERIFY_RECORDS", 20_000, positiveInteger),
  };
}
