// The workers benchmark: executions of a trivial program (`true`) run by the server itself
// (the embedded executor, 4 at a time) vs dispatched to 4 `amctl worker` processes of
// capacity 1 on this machine (`serve --workers`), both in one run:
//
//   throughput  BENCH_WORKER_TASKS executions submitted 16 at a time; completed executions/s,
//               ratio workers / embedded
//   latency     one execution at a time, submit → completed (its terminal event seen on a
//               WatchOperation stream); p50 of each and the difference, which is what the lease
//               round trip adds: the assignment on the worker's stream and its outcome report
//
// Every execution spawns a process either way, so the ratio compares dispatch, not programs.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixed, ms, type SectionReport } from "./format.js";
import { sleep, spawnAmctl, startServerProcess, stopServerProcess, type BenchServer } from "./processes.js";
import { createBenchProfile, operationsClient, requestIds, waitForEnd, type OperationsClient } from "./records.js";
import type { Settings } from "./settings.js";
import { percentile, ratio } from "./stats.js";
import { TaskState } from "../src/gen/agentmachine/v1/types_pb.js";

/** Executions running at once, either way. */
export const PARALLEL = 4;
export const SUBMITTERS = 16;
const LATENCY_SAMPLES = 40;

interface Measured {
  perSecond: number;
  p50Ms: number;
}

export async function runOne(client: OperationsClient, profile: string, nextId: () => string): Promise<number> {
  const started = performance.now();
  const { operation } = await client.submitOperation({
    requestId: nextId(),
    profile,
    spec: { kind: { case: "executionStart", value: { argv: ["true"] } } },
  });
  const { operation: ended } = await waitForEnd(client, operation!.name);
  if (ended.state !== TaskState.COMPLETED) throw new Error(`${ended.name} ended ${TaskState[ended.state]}: ${ended.stopCause?.message ?? ""}`);
  return performance.now() - started;
}

/** Completed executions of `true` per second, `tasks` of them submitted by SUBMITTERS clients at once. */
export async function executionsPerSecond(client: OperationsClient, profile: string, nextId: () => string, tasks: number): Promise<number> {
  let remaining = tasks;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: SUBMITTERS }, async () => {
      while (remaining > 0) {
        remaining -= 1;
        await runOne(client, profile, nextId);
      }
    }),
  );
  return tasks / ((performance.now() - started) / 1000);
}

async function measure(server: BenchServer, tasks: number): Promise<Measured> {
  const client = operationsClient(server);
  const { profile } = await createBenchProfile(client);
  const nextId = requestIds("bench-exec");
  await runOne(client, profile, nextId); // warm-up
  const perSecond = await executionsPerSecond(client, profile, nextId, tasks);
  const latencies: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i += 1) latencies.push(await runOne(client, profile, nextId));
  return { perSecond, p50Ms: percentile(latencies, 50) };
}

/** Starts `amctl worker` processes of capacity 1 against `server` and waits until each has connected. */
async function startWorkers(server: BenchServer, count: number) {
  const tokenFile = join(server.dataDir, "worker-token");
  writeFileSync(tokenFile, server.token, { mode: 0o600 });
  const workers = Array.from({ length: count }, (_, i) =>
    spawnAmctl(["--token-file", tokenFile, "worker", "--server", server.url, "--capacity", "1", "--work-dir", join(server.dataDir, `worker-${i}`)]),
  );
  await Promise.all(
    workers.map(
      (worker) =>
        new Promise<void>((resolve, reject) => {
          let stderr = "";
          worker.stderr!.on("data", (chunk: Buffer) => {
            stderr += chunk.toString("utf8");
            if (stderr.includes('"msg":"connected"')) resolve();
          });
          worker.once("exit", () => reject(new Error(`a worker exited before connecting:\n${stderr}`)));
        }),
    ),
  );
  return workers;
}

export async function workersBenchmark(settings: Settings): Promise<SectionReport> {
  const tasks = settings.workerTasks;
  const embeddedServer = await startServerProcess({ args: ["--max-concurrent-executions", String(PARALLEL)] });
  let embedded: Measured;
  try {
    embedded = await measure(embeddedServer, tasks);
  } finally {
    await stopServerProcess(embeddedServer);
  }
  const dispatching = await startServerProcess({ args: ["--workers"] });
  let remote: Measured;
  const workers = await startWorkers(dispatching, PARALLEL);
  try {
    remote = await measure(dispatching, tasks);
  } finally {
    for (const worker of workers) worker.kill("SIGTERM");
    await sleep(500);
    await stopServerProcess(dispatching);
  }
  const lines = [
    `${tasks} executions of \`true\`, ${SUBMITTERS} submitters; ${PARALLEL} at a time either way`,
    `  embedded executor   ${fixed(embedded.perSecond, 1)} executions/s   p50 submit→completed ${ms(embedded.p50Ms)} ms`,
    `  ${PARALLEL} remote workers    ${fixed(remote.perSecond, 1)} executions/s   p50 submit→completed ${ms(remote.p50Ms)} ms`,
    `  throughput ratio workers / embedded: ${fixed(ratio(remote.perSecond, embedded.perSecond))}`,
    `  lease round trip adds ${ms(remote.p50Ms - embedded.p50Ms)} ms at p50 (latency ratio ${fixed(ratio(remote.p50Ms, embedded.p50Ms))})`,
  ];
  return {
    name: "workers",
    lines,
    data: { tasks, embedded, remote, throughputRatio: ratio(remote.perSecond, embedded.perSecond), addedP50Ms: remote.p50Ms - embedded.p50Ms },
  };
}
