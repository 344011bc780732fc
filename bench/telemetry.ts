// The telemetry benchmark: durable SubmitOperation of record operations (tool_grant.apply, fresh
// request_id) over gRPC, in A/B runs of the same load against two servers that differ only in
// telemetry: the baseline has none (plain `amctl serve`), the subject keeps metrics
// (`--metrics-listen 127.0.0.1:0`, scraped every second) and exports every call's trace
// (OTEL_EXPORTER_OTLP_ENDPOINT, default sampler: every root span sampled) to an OTLP sink in
// this process that accepts and discards. Goal: throughput ratio ≥ 0.95 at 64 clients. Then the
// same at 64 clients with one trace in ten sampled, as an operator would run at a high rate.
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { count, type SectionReport } from "./format.js";
import { runsPreamble } from "./load.js";
import { repoRoot, startServerProcess, type BenchServer } from "./processes.js";
import type { Settings } from "./settings.js";
import { compareSubmits, type SubmitComparison } from "./submit-ab.js";

const SCRAPE_INTERVAL_MS = 1000;
const GOAL_CLIENTS = 64;

/** Whether `amctl serve` has `flag` (an older server has no --metrics-listen). */
function serveHasFlag(flag: string): boolean {
  return execFileSync(process.execPath, [join(repoRoot, "bin/amctl.mjs"), "serve", "--help"], { encoding: "utf8" }).includes(flag);
}

interface OtlpSink {
  url: string;
  stats: { requests: number; bytes: number };
  close(): Promise<void>;
}

/** Takes OTLP/HTTP exports, answers each with an empty (all accepted) response, and keeps only counts. */
async function startOtlpSink(): Promise<OtlpSink> {
  const stats = { requests: 0, bytes: 0 };
  const server = createServer((req, res) => {
    req.on("data", (chunk: Buffer) => (stats.bytes += chunk.length));
    req.on("end", () => {
      stats.requests += 1;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Scrapes `server`'s metrics every second while it runs, as Prometheus would (more often than its
 * usual 15 s). A scrape that fails once the server is being stopped is not counted.
 */
function scrapeWhileUp(server: BenchServer, scrapes: { ok: number; failed: number }): void {
  const failed = (): void => {
    if (!server.child.killed) scrapes.failed += 1;
  };
  const timer = setInterval(() => {
    fetch(server.metricsUrl!)
      .then(async (res) => {
        await res.text();
        if (res.ok) scrapes.ok += 1;
        else failed();
      })
      .catch(failed);
  }, SCRAPE_INTERVAL_MS);
  server.child.once("exit", () => clearInterval(timer));
}

/** Head sampling of one trace in ten: what an operator would set at a high submit rate. */
const SAMPLED = { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.1" };

interface TelemetryRun extends SubmitComparison {
  /** What the sink received during the run. */
  exports: { requests: number; bytes: number };
  scrapes: { ok: number; failed: number };
  metricsUrl: string | undefined;
}

/** Plain servers against servers with metrics (when this server has them) and traces, exported to `sink`. */
async function compareTelemetry(
  name: string,
  label: string,
  metrics: boolean,
  tracing: NodeJS.ProcessEnv,
  sink: OtlpSink,
  settings: Settings,
): Promise<TelemetryRun> {
  const before = { ...sink.stats };
  const scrapes = { ok: 0, failed: 0 };
  let metricsUrl: string | undefined;
  const comparison = await compareSubmits(
    name,
    label,
    {
      baseline: () => startServerProcess(),
      subject: async () => {
        const server = await startServerProcess({
          args: metrics ? ["--metrics-listen", "127.0.0.1:0"] : [],
          env: { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, ...tracing },
        });
        metricsUrl = server.metricsUrl;
        if (metricsUrl !== undefined) scrapeWhileUp(server, scrapes);
        return server;
      },
    },
    { clients: GOAL_CLIENTS, ratio: 0.95 },
    settings,
  );
  return { ...comparison, exports: { requests: sink.stats.requests - before.requests, bytes: sink.stats.bytes - before.bytes }, scrapes, metricsUrl };
}

function received({ exports, scrapes }: TelemetryRun): string {
  return `OTLP sink: ${count(exports.requests)} export requests, ${count(exports.bytes)} bytes; metrics scrapes: ${count(scrapes.ok)} answered, ${count(scrapes.failed)} failed`;
}

export async function telemetryBenchmark(settings: Settings): Promise<SectionReport> {
  const metrics = serveHasFlag("--metrics-listen");
  const what = metrics ? "metrics and traces" : "traces";
  const sink = await startOtlpSink();
  try {
    const all = await compareTelemetry("telemetry", `${what} on/off`, metrics, {}, sink, settings);
    // The same at the goal's clients only, with one trace in ten recorded.
    const sampled = await compareTelemetry("telemetry, sampled", `${what} (1 trace in 10) on/off`, metrics, SAMPLED, sink, {
      ...settings,
      concurrency: [GOAL_CLIENTS],
    });
    const notes = [
      ...(metrics ? [] : ["`amctl serve --help` has no --metrics-listen: this server keeps no metrics, so the subject has traces only"]),
      ...(metrics && all.metricsUrl === undefined ? ['the subject\'s "serving" line gave no metricsUrl: its metrics were not scraped'] : []),
      ...(all.exports.requests === 0 ? ["the OTLP sink received nothing: the subject exported no traces"] : []),
    ];
    const errors = all.errors + sampled.errors;
    const data = (run: TelemetryRun) => ({
      cells: run.cells,
      ratios: run.ratios,
      cpuPerSubmitUs: run.cpuPerSubmitUs,
      table: run.table,
      goal: run.goal,
      exports: run.exports,
      scrapes: run.scrapes,
    });
    return {
      name: "telemetry",
      lines: [
        "Load (both sides): agentmachine.v1.OperationService/SubmitOperation of a record operation (tool_grant.apply, fresh request_id); durable (SQLite, synchronous=FULL).",
        `Baseline: plain amctl serve; subject: ${metrics ? "--metrics-listen 127.0.0.1:0 (scraped every second) and " : ""}OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP sink that discards; every call traced (the default sampler).`,
        runsPreamble(settings),
        "",
        all.table,
        "",
        ...all.ratioLines,
        ...all.cpuLines,
        received(all),
        "",
        `The same with ${Object.entries(SAMPLED)
          .map(([name, value]) => `${name}=${value}`)
          .join(" ")}:`,
        "",
        sampled.table,
        "",
        ...sampled.ratioLines,
        ...sampled.cpuLines,
        received(sampled),
        ...notes.map((line) => `NOTE: ${line}`),
        ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
      ],
      data: { protocol: all.protocol, metrics, errors, all: data(all), sampled: data(sampled) },
    };
  } finally {
    await sink.close();
  }
}
