// The sandbox benchmark: executions of a trivial program (`true`) on one server run by the
// embedded executor in a sandbox (the default) vs with --unsafe-no-sandbox, in one run:
//
//   latency     one execution at a time, submit → completed (its terminal event seen on a
//               WatchOperation stream): p50 and p99 each way and their ratios (goal ≤ 1.5×)
//   throughput  BENCH_WORKER_TASKS executions submitted 16 at a time, 4 running at once:
//               completed executions/s each way and the ratio
//
// A sandbox costs a bubblewrap start (namespaces, mounts), the Perl launcher and its bridge to
// the plane, a cgroup and the plane's unix sockets; the unsandboxed run spawns `true` alone.
import { fixed, ms, type SectionReport } from "./format.js";
import { startServerProcess, stopServerProcess, type BenchServer } from "./processes.js";
import { createBenchProfile, operationsClient, requestIds } from "./records.js";
import type { Settings } from "./settings.js";
import { percentile, ratio } from "./stats.js";
import { executionsPerSecond, PARALLEL, runOne, SUBMITTERS } from "./workers.js";

const LATENCY_SAMPLES = 60;

interface Measured {
  p50Ms: number;
  p99Ms: number;
  perSecond: number;
}

async function measure(server: BenchServer, tasks: number): Promise<Measured> {
  const client = operationsClient(server);
  const { profile } = await createBenchProfile(client);
  const nextId = requestIds("bench-sandbox");
  for (let i = 0; i < 3; i += 1) await runOne(client, profile, nextId); // warm-up
  const latencies: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i += 1) latencies.push(await runOne(client, profile, nextId));
  const perSecond = await executionsPerSecond(client, profile, nextId, tasks);
  return { p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), perSecond };
}

async function measureServer(args: string[], tasks: number): Promise<Measured> {
  const server = await startServerProcess({ args: ["--max-concurrent-executions", String(PARALLEL), ...args] });
  try {
    return await measure(server, tasks);
  } finally {
    await stopServerProcess(server);
  }
}

export async function sandboxBenchmark(settings: Settings): Promise<SectionReport> {
  const tasks = settings.workerTasks;
  const unsandboxed = await measureServer(["--unsafe-no-sandbox"], tasks);
  const sandboxed = await measureServer([], tasks);
  const lines = [
    `executions of \`true\` on the embedded executor: ${LATENCY_SAMPLES} one at a time, then ${tasks} with ${SUBMITTERS} submitters, ${PARALLEL} running at once`,
    `  unsandboxed   p50 ${ms(unsandboxed.p50Ms)} ms   p99 ${ms(unsandboxed.p99Ms)} ms   ${fixed(unsandboxed.perSecond, 1)} executions/s`,
    `  sandboxed     p50 ${ms(sandboxed.p50Ms)} ms   p99 ${ms(sandboxed.p99Ms)} ms   ${fixed(sandboxed.perSecond, 1)} executions/s`,
    `  latency ratio sandboxed / unsandboxed: p50 ${fixed(ratio(sandboxed.p50Ms, unsandboxed.p50Ms))}, p99 ${fixed(ratio(sandboxed.p99Ms, unsandboxed.p99Ms))} (goal ≤ 1.5)`,
    `  throughput ratio sandboxed / unsandboxed: ${fixed(ratio(sandboxed.perSecond, unsandboxed.perSecond))}`,
  ];
  return {
    name: "sandbox",
    lines,
    data: {
      tasks,
      sandboxed,
      unsandboxed,
      p50Ratio: ratio(sandboxed.p50Ms, unsandboxed.p50Ms),
      p99Ratio: ratio(sandboxed.p99Ms, unsandboxed.p99Ms),
      throughputRatio: ratio(sandboxed.perSecond, unsandboxed.perSecond),
    },
  };
}
