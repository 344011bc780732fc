// The sandbox benchmark: executions of a trivial program (`true`) on one server run by the
// embedded executor in a sandbox (the default) vs with --unsafe-no-sandbox, in one run:
//
//   latency     one execution at a time, submit → completed (its terminal event seen on a
//               WatchOperation stream): p50 and p99 each way and their ratios (goal ≤ 1.5×);
//               the two servers run side by side and take turns, one execution each, so a
//               change in the machine's load (it is shared) weighs on both alike
//   throughput  BENCH_WORKER_TASKS executions submitted 16 at a time, 4 running at once:
//               completed executions/s each way and the ratio
//
// A sandbox costs a bubblewrap start (namespaces, mounts), the Perl launcher and its bridge to
// the plane, a cgroup and the plane's unix sockets; the unsandboxed run spawns `true` alone.
import { fixed, ms, type SectionReport } from "./format.js";
import { startServerProcess, stopServerProcess, type BenchServer } from "./processes.js";
import { createBenchProfile, operationsClient, requestIds, type OperationsClient } from "./records.js";
import type { Settings } from "./settings.js";
import { percentile, ratio } from "./stats.js";
import { executionsPerSecond, PARALLEL, runOne, SUBMITTERS } from "./workers.js";

const LATENCY_SAMPLES = 60;

interface Measured {
  p50Ms: number;
  p99Ms: number;
  perSecond: number;
}

interface Side {
  server: BenchServer;
  client: OperationsClient;
  profile: string;
  nextId: () => string;
  latencies: number[];
}

async function startSide(args: string[]): Promise<Side> {
  const server = await startServerProcess({ args: ["--max-concurrent-executions", String(PARALLEL), ...args] });
  const client = operationsClient(server);
  const { profile } = await createBenchProfile(client);
  const nextId = requestIds("bench-sandbox");
  for (let i = 0; i < 3; i += 1) await runOne(client, profile, nextId); // warm-up
  return { server, client, profile, nextId, latencies: [] };
}

async function measured(side: Side, tasks: number): Promise<Measured> {
  const perSecond = await executionsPerSecond(side.client, side.profile, side.nextId, tasks);
  return { p50Ms: percentile(side.latencies, 50), p99Ms: percentile(side.latencies, 99), perSecond };
}

/** The two servers' latencies, one execution each in turn (which goes first alternates). */
async function alternate(a: Side, b: Side): Promise<void> {
  for (let i = 0; i < LATENCY_SAMPLES; i += 1) {
    for (const side of i % 2 === 0 ? [a, b] : [b, a]) side.latencies.push(await runOne(side.client, side.profile, side.nextId));
  }
}

export async function sandboxBenchmark(settings: Settings): Promise<SectionReport> {
  const tasks = settings.workerTasks;
  const sides: Side[] = [];
  let unsandboxed: Measured;
  let sandboxed: Measured;
  try {
    sides.push(await startSide(["--unsafe-no-sandbox"]));
    sides.push(await startSide([]));
    const [plain, confined] = sides as [Side, Side];
    await alternate(plain, confined);
    unsandboxed = await measured(plain, tasks);
    sandboxed = await measured(confined, tasks);
  } finally {
    await Promise.all(sides.map(({ server }) => stopServerProcess(server)));
  }
  const lines = [
    `executions of \`true\` on the embedded executor: ${LATENCY_SAMPLES} one at a time on each server in turn, then ${tasks} with ${SUBMITTERS} submitters, ${PARALLEL} running at once`,
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
