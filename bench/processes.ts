// Child processes of the benchmark: the server (`amctl serve`) and the workers (tsx scripts that
// talk JSON lines on stdin/stdout). Every child is tracked and killed when this process ends,
// however it ends: normally, on an error, or on Ctrl-C.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { copyOperatorKey } from "../test/helpers/auth.js";
import { mintBenchCredential } from "./credentials.js";

export const repoRoot = join(import.meta.dirname, "..");

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export function killAll(signal: NodeJS.Signals = "SIGKILL"): void {
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

/** Rejects after `ms` with `message` unless `promise` settles first. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string, onTimeout: () => void = () => {}): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(message));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// The server

/** Where the server is and the credential to call it with. */
export interface Endpoint {
  url: string;
  token: string;
}

export interface BenchServer extends Endpoint {
  child: ChildProcess;
  pid: number;
  dataDir: string;
  /** With `--metrics-listen`: where its metrics are scraped (`http://HOST:PORT/metrics`). */
  metricsUrl?: string;
}

export interface ServerOptions {
  /** `sqlite` or a `postgres://` URL, given in AMCTL_STORE (as a URL with a password should be); unset: whatever the environment says. */
  store?: string;
  /** Another replica's data dir, whose operator key this one shares (so the bench's credential is valid on both). */
  replicaOf?: string;
  /** More `amctl serve` flags. */
  args?: string[];
  /** Serve with the audit log off (bench/serve-without-audit.ts): the audit benchmark's baseline. */
  withoutAudit?: boolean;
  /** More environment variables (e.g. OTEL_EXPORTER_OTLP_ENDPOINT). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts `amctl serve` on 127.0.0.1, a free port and a fresh data dir, with its defaults
 * (SQLite, synchronous=FULL, unless `store` says otherwise) and the default policy bundles.
 */
export async function startServerProcess(options: ServerOptions = {}): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "amctl-bench-"));
  if (options.replicaOf !== undefined) copyOperatorKey(options.replicaOf, dataDir);
  const token = await mintBenchCredential(dataDir);
  const child = track(
    spawn(
      process.execPath,
      [
        // Node's own flags for the server, to profile it (`--cpu-prof`, which NODE_OPTIONS refuses).
        ...(process.env.BENCH_SERVER_NODE_FLAGS?.split(" ").filter(Boolean) ?? []),
        ...(options.withoutAudit ? ["--import", "tsx", join(repoRoot, "bench/serve-without-audit.ts")] : [join(repoRoot, "bin/amctl.mjs")]),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dataDir,
        // The bundles `amctl init` installs. Without a bundle for its profile type every gated
        // operation is denied, the tool_grant.apply that most benchmarks submit among them.
        "--policy",
        join(repoRoot, "examples/policies"),
        // info logs only lifecycle lines ("serving"); per-call lines are debug.
        "--log-level",
        "info",
        "--shutdown-grace-ms",
        "1000",
        ...(options.args ?? []),
      ],
      {
        cwd: repoRoot,
        env: { ...process.env, ...(options.store !== undefined ? { AMCTL_STORE: options.store } : {}), ...options.env },
        stdio: ["ignore", "ignore", "pipe"],
      },
    ),
  );
  let stderr = "";
  const serving = await new Promise<{ url: string; metricsUrl?: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 30 s:\n${stderr}`)), 30_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
      if (stderr.length > 1_000_000) stderr = stderr.slice(-100_000);
      for (const line of stderr.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          const entry = JSON.parse(line) as { msg?: unknown; url?: unknown; metricsUrl?: unknown };
          if (entry.msg === "serving" && typeof entry.url === "string") {
            clearTimeout(timer);
            resolve({ url: entry.url, ...(typeof entry.metricsUrl === "string" ? { metricsUrl: entry.metricsUrl } : {}) });
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
  if (new URL(serving.url).hostname !== "127.0.0.1") throw new Error(`server is not on 127.0.0.1: ${serving.url}`);
  return { ...serving, token, child, pid: child.pid!, dataDir };
}

/** Runs `amctl ARGS...` (killed with the other children on exit), its stderr piped. */
export function spawnAmctl(args: string[]): ChildProcess {
  return track(spawn(process.execPath, [join(repoRoot, "bin/amctl.mjs"), ...args], { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] }));
}

export async function stopServerProcess(server: BenchServer): Promise<void> {
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 5000);
  await exited(server.child);
  clearTimeout(timer);
  rmSync(server.dataDir, { recursive: true, force: true });
}

/** Runs `body` against a fresh server, which is stopped (and its data dir removed) afterwards. */
export async function withServer<T>(label: string, body: (server: BenchServer) => Promise<T>): Promise<T> {
  const server = await startServerProcess();
  process.stderr.write(`bench: ${label}: server pid ${server.pid} at ${server.url}\n`);
  try {
    return await body(server);
  } finally {
    await stopServerProcess(server);
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readings (Linux); NaN where unavailable.

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds used so far by a process. */
export function cpuSeconds(pid: number | undefined): number {
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

/** Measures a process's CPU over `body`, as a share of one core. */
export async function withCpu<T>(pid: number, body: () => Promise<T>): Promise<{ value: T; cpu: number; seconds: number }> {
  const cpuBefore = cpuSeconds(pid);
  const started = performance.now();
  const value = await body();
  const seconds = (performance.now() - started) / 1000;
  return { value, cpu: (cpuSeconds(pid) - cpuBefore) / seconds, seconds };
}

/** Resident set size of a process (VmRSS in /proc/<pid>/status), KiB. */
export function rssKiB(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : NaN;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// Workers: `node --import tsx <script>`, one JSON object a line on stdout, commands on stdin.

export class WorkerProcess {
  readonly child: ChildProcess;
  private readonly messages: unknown[] = [];
  private readonly waiting: { resolve: (message: unknown) => void; reject: (error: Error) => void }[] = [];
  private stderr = "";
  private failure: Error | undefined;

  constructor(
    readonly label: string,
    script: string,
    args: string[],
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.child = track(spawn(process.execPath, ["--import", "tsx", join(repoRoot, script), ...args], { cwd: repoRoot, env, stdio: ["pipe", "pipe", "pipe"] }));
    // Writing to a worker that has just died must not crash the orchestrator (EPIPE).
    this.child.stdin!.on("error", () => {});
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
      if (this.stderr.length > 100_000) this.stderr = this.stderr.slice(-50_000);
    });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        this.stderr += `(stdout) ${line}\n`;
        return;
      }
      const waiter = this.waiting.shift();
      if (waiter) waiter.resolve(message);
      else this.messages.push(message);
    });
    // "close" comes after stdout has ended, so every line it printed has been delivered.
    this.child.once("close", (code, signal) => {
      this.failure = new Error(`${label} exited (${code ?? signal}):\n${this.stderr.trim()}`);
      for (const waiter of this.waiting.splice(0)) waiter.reject(this.failure);
    });
  }

  /** The next JSON line; rejects when the worker exits first. */
  next<T>(): Promise<T> {
    if (this.messages.length > 0) return Promise.resolve(this.messages.shift() as T);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => this.waiting.push({ resolve: resolve as (message: unknown) => void, reject }));
  }

  send(command: string | object): void {
    this.child.stdin!.write(`${typeof command === "string" ? command : JSON.stringify(command)}\n`);
  }

  /** Sends a command and waits for its answer, killing the worker if it takes longer than `timeoutMs`. */
  request<T>(command: object, timeoutMs: number): Promise<T> {
    this.send(command);
    return withTimeout(this.next<T>(), timeoutMs, `${this.label}: no answer to ${JSON.stringify(command)} within ${timeoutMs / 1000} s`, () => this.kill());
  }

  /** Closes stdin (a worker that waits on it then ends) and waits for the exit; kills it after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.kill(), graceMs);
    await exited(this.child);
    clearTimeout(timer);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}
