// The replicas benchmark: durable SubmitOperation of record operations (tool_grant.apply, fresh
// request_id) over gRPC, in A/B runs of the same load against two deployments:
//
//   1 → 2 replicas        one `amctl serve` on a PostgreSQL database vs two on another database,
//                         the load workers spread over them round robin (each replica runs the
//                         operations it admitted and tails the other's events)
//   SQLite → PostgreSQL   one server on the embedded SQLite file vs one on PostgreSQL
//
// The PostgreSQL cluster is a throwaway one (test/helpers/postgres.ts: initdb in a temp dir,
// fsync and synchronous_commit on) on this machine, sharing its cores with the servers and the
// load generators. Every deployment has its own database (or data dir) and its own profile.
import { fixed, type SectionReport } from "./format.js";
import { errorCount, formatCells, runCell, runsPreamble, type CellResult, type CellTargets } from "./load.js";
import { startServerProcess, stopServerProcess, type BenchServer, type ServerOptions } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import type { Settings } from "./settings.js";
import { startPostgresCluster } from "../test/helpers/postgres.js";

const PROTOCOL = "grpc";
/** When BENCH_CONCURRENCY has no count of 2 or more (one client cannot spread over two replicas). */
const DEFAULT_CLIENTS = 64;

interface Comparison {
  name: string;
  /** What the ratio line calls the ratio. */
  ratio: string;
  targets: CellTargets;
}

export async function replicasBenchmark(settings: Settings): Promise<SectionReport> {
  const clientCounts = settings.concurrency.filter((clients) => clients >= 2);
  if (clientCounts.length === 0) clientCounts.push(DEFAULT_CLIENTS);
  const cluster = await startPostgresCluster();
  process.stderr.write(`bench: replicas: PostgreSQL cluster started in ${cluster.startMs} ms\n`);
  const servers: BenchServer[] = [];
  const cells: CellResult[] = [];
  const names = new Map<CellResult, Comparison>();
  try {
    const start = async (label: string, options: ServerOptions): Promise<BenchServer> => {
      const server = await startServerProcess(options);
      servers.push(server);
      process.stderr.write(`bench: replicas: ${label}: server pid ${server.pid} at ${server.url}\n`);
      return server;
    };
    const sqlite = [await start("SQLite", { store: "sqlite" })];
    const one = [await start("PostgreSQL, 1 replica", { store: await cluster.createDatabase("bench_one") })];
    const twoStore = await cluster.createDatabase("bench_two");
    const first = await start("PostgreSQL, replica 1 of 2", { store: twoStore });
    const two = [first, await start("PostgreSQL, replica 2 of 2", { store: twoStore, replicaOf: first.dataDir })];
    // The same profile id everywhere: one --profile for every worker.
    let profile = "";
    for (const deployment of [sqlite, one, two]) ({ profile } = await createBenchProfile(operationsClient(deployment[0]!)));
    const comparisons: Comparison[] = [
      { name: "PostgreSQL ×1 → ×2", ratio: "2 replicas / 1 replica (PostgreSQL)", targets: { baseline: one, subject: two } },
      { name: "SQLite → PostgreSQL", ratio: "PostgreSQL / SQLite (1 replica)", targets: { baseline: sqlite, subject: one } },
    ];
    const total = clientCounts.length * comparisons.length;
    for (const clients of clientCounts) {
      for (const comparison of comparisons) {
        const spec = { protocol: PROTOCOL, clients, baseline: "submit", subject: "submit", workerArgs: ["--profile", profile] } as const;
        const cell = await runCell(comparison.targets, spec, settings, `[replicas ${cells.length + 1}/${total}] ${comparison.name}`);
        cells.push(cell);
        names.set(cell, comparison);
      }
    }
  } finally {
    await Promise.all(servers.map((server) => stopServerProcess(server)));
    await cluster.stop();
  }
  const table = formatCells(cells, { title: "baseline → subject", of: (cell) => names.get(cell)!.name });
  const ratios = cells.map((cell) => ({ comparison: names.get(cell)!.name, clients: cell.clients, ratio: cell.ratios.throughput }));
  const errors = errorCount(cells);
  return {
    name: "replicas",
    lines: [
      "Load (both sides): agentmachine.v1.OperationService/SubmitOperation of a record operation (tool_grant.apply, fresh request_id); durable.",
      "Deployments: SQLite = one server on its SQLite file; PostgreSQL ×1 = one server on a database; ×2 = two servers on another database,",
      `the load workers (at least one per server) spread over them. PostgreSQL runs on this machine (fsync on); its CPU is not in "server cpu".`,
      runsPreamble(settings),
      "",
      table,
      "",
      ...cells.map((cell) => `${names.get(cell)!.ratio} submit throughput at ${cell.clients} clients: ${fixed(cell.ratios.throughput)}`),
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
    ],
    data: { protocol: PROTOCOL, cells, ratios, table },
  };
}
