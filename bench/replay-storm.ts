// The replay-storm benchmark: Health/Check latency while replays that match almost nothing read a
// long history, against Health/Check on the idle server, in one run.
//
// One server; BENCH_STORM_EVENTS record events in profiles/bench, then the profile
// profiles/storm (its creation: the two newest events). The storm is BENCH_STORM_REPLAYS
// WatchEvents streams from sequence 0 with the filter profile = profiles/storm
// (bench/storm-worker.ts): each considers the whole history, receives the two newest events, and is
// opened again, so the storm lasts as long as the measurement. The health side is one load worker
// (bench/load-worker.ts, gRPC, one call in flight). Rounds alternate idle and storm (A B, B A, …).
// Figure: health p99 during the storm / idle health p99, all rounds together. Goal ≤ 5.
import { count, fixed, formatTable, ms, type SectionReport } from "./format.js";
import { credentialEnv } from "./credentials.js";
import type { WorkerResult } from "./load-worker.js";
import { type BenchServer, withServer, withTimeout, WorkerProcess } from "./processes.js";
import { createBenchProfile, EVENTS_PER_RECORD, operationsClient, submitRecords, waitForSequence } from "./records.js";
import type { Settings } from "./settings.js";
import { ratio, summarize } from "./stats.js";

const STORM_GOAL = 5;
const STORM_PROFILE_ID = "storm";
/** The events of profiles/storm: its creation's two. */
const STORM_PROFILE_EVENTS = 2;
const PRODUCER_CONCURRENCY = 64;

interface StormRun {
  side: "idle" | "storm";
  latenciesMs: number[];
  seconds: number;
  /** Replays the storm finished during the run (0 when idle). */
  replays: number;
}

/** One measured window of health checks, one in flight. */
async function healthRun(server: BenchServer, settings: Settings): Promise<{ latenciesMs: number[]; seconds: number }> {
  const args = ["--url", server.url, "--protocol", "grpc", "--method", "health", "--concurrency", "1"];
  const worker = new WorkerProcess(
    "health worker",
    "bench/load-worker.ts",
    [...args, "--warmup", String(settings.warmupSeconds), "--seconds", String(settings.seconds)],
    credentialEnv(server.token),
  );
  try {
    await worker.next<{ ready: true }>();
    worker.send("go");
    const result = await withTimeout(worker.next<WorkerResult>(), (settings.warmupSeconds + settings.seconds) * 1000 + 60_000, "health run took too long", () =>
      worker.kill(),
    );
    return { latenciesMs: result.latenciesUs.map((us) => us / 1000), seconds: result.seconds };
  } finally {
    await worker.stop();
  }
}

/** A health run while the storm runs: the storm starts first and is stopped after it. */
async function stormRun(server: BenchServer, settings: Settings, profile: string): Promise<StormRun> {
  const storm = new WorkerProcess(
    "storm worker",
    "bench/storm-worker.ts",
    ["--url", server.url, "--replays", String(settings.stormReplays), "--profile", profile, "--expect", String(STORM_PROFILE_EVENTS)],
    credentialEnv(server.token),
  );
  try {
    await withTimeout(storm.next<{ ready: true }>(), 600_000, "the storm's first replays took longer than 600 s", () => storm.kill());
    const health = await healthRun(server, settings);
    storm.child.stdin!.end();
    const { replays } = await withTimeout(storm.next<{ replays: number }>(), 60_000, "the storm did not stop", () => storm.kill());
    return { side: "storm", ...health, replays };
  } finally {
    await storm.stop();
  }
}

export async function replayStormBenchmark(settings: Settings): Promise<SectionReport> {
  const operations = Math.ceil(settings.stormEvents / EVENTS_PER_RECORD);
  const runs: StormRun[] = [];
  let head = 0n;
  await withServer("replay storm", async (server) => {
    const client = operationsClient(server);
    const { profile: benchProfile, head: start } = await createBenchProfile(client);
    process.stderr.write(`[replay-storm] producing ${operations * EVENTS_PER_RECORD} events…\n`);
    await submitRecords(client, benchProfile, operations, PRODUCER_CONCURRENCY, (done) =>
      process.stderr.write(`[replay-storm]   ${done}/${operations} submitted\n`),
    );
    await waitForSequence(client, start + BigInt(operations * EVENTS_PER_RECORD), 600_000);
    const storm = await createBenchProfile(client, STORM_PROFILE_ID);
    head = storm.head;
    for (let round = 0; round < settings.rounds; round++) {
      for (const side of round % 2 === 0 ? (["idle", "storm"] as const) : (["storm", "idle"] as const)) {
        process.stderr.write(`[replay-storm] round ${round + 1}/${settings.rounds}: ${side}… `);
        const run = side === "idle" ? { side, ...(await healthRun(server, settings)), replays: 0 } : await stormRun(server, settings, storm.profile);
        runs.push(run);
        process.stderr.write(`health p99 ${ms(summarize(run.latenciesMs, run.seconds).p99Ms)} ms\n`);
      }
    }
  });
  const summaryOf = (side: StormRun["side"]) => {
    const of = runs.filter((run) => run.side === side);
    return summarize(
      of.flatMap((run) => run.latenciesMs),
      of.reduce((sum, run) => sum + run.seconds, 0),
    );
  };
  const value = ratio(summaryOf("storm").p99Ms, summaryOf("idle").p99Ms);
  const table = formatTable(
    ["round", "side", "health calls", "p50 ms", "p99 ms", "max ms", "replays finished", "replays/s"],
    runs.map((run, index) => {
      const summary = summarize(run.latenciesMs, run.seconds);
      return [
        String(Math.floor(index / 2) + 1),
        run.side === "idle" ? "idle" : `${settings.stormReplays} replays running`,
        count(summary.calls),
        ms(summary.p50Ms),
        ms(summary.p99Ms),
        ms(summary.maxMs),
        run.side === "idle" ? "" : count(run.replays),
        run.side === "idle" ? "" : fixed(run.replays / run.seconds, 1),
      ];
    }),
    new Set([1]),
  );
  return {
    name: "replay-storm",
    lines: [
      `Replay storm: Health/Check (one in flight) while ${settings.stormReplays} WatchEvents streams replay from sequence 0 over ${count(Number(head))} events, ` +
        `matching only the newest ${STORM_PROFILE_EVENTS} (filter profile = profiles/${STORM_PROFILE_ID}), each opened again when done; against Health/Check on the idle server.`,
      "",
      table,
      "",
      `storm/idle health p99: ${fixed(value)} (goal ≤ ${STORM_GOAL}) (${ms(summaryOf("storm").p99Ms)} vs ${ms(summaryOf("idle").p99Ms)} ms)`,
    ],
    data: {
      events: Number(head),
      replays: settings.stormReplays,
      runs: runs.map(({ latenciesMs: _, ...run }) => run),
      ratio: value,
      goal: { ratio: STORM_GOAL, met: value <= STORM_GOAL },
      table,
    },
  };
}
