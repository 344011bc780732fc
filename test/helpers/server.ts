// Test servers: in-process on port 0 (fast, for most tests), or as a real child process
// (`amctl serve`) for signals and exit codes. Both listen on real sockets.
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { Writable } from "node:stream";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { createLogger } from "../../src/api/logger.js";
import { startServer, type RunningServer } from "../../src/server/server.js";

import { mintRoot, operatorOf } from "./auth.js";
import { repoRoot, tempDir } from "./temp-dir.js";
import { registerToken } from "./tokens.js";

export { repoRoot, tempDir };

/** Policy bundles under which every gate allows: tests of other things are not decided by policy. */
export const TEST_POLICIES = join(repoRoot, "test/fixtures/policies");

/**
 * A root credential with the full scope for the server on `dataDir` (its operator key is
 * created as `amctl init` does: the public key in the data dir, the private key outside it),
 * registered for `url` so test clients use it.
 */
async function authorize(url: string, dataDir: string): Promise<string> {
  const token = await mintRoot(await operatorOf(dataDir));
  registerToken(url, token);
  return token;
}
export interface TestServer extends RunningServer {
  /** Every log line the server wrote, parsed. */
  logs: Record<string, unknown>[];
  dataDir: string;
  /** A root credential with the full scope (test clients send it by default). */
  token: string;
  /** The configuration the server runs with: the same object, so settings it reads per call can be changed. */
  config: ServerConfig;
}

/** Starts a server in this process on 127.0.0.1 and a free port, with a fresh data dir. */
export async function startTestServer(overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  const config: ServerConfig = { ...defaultConfig, port: 0, dataDir: tempDir(), shutdownGraceMs: 2000, policyDir: TEST_POLICIES, ...overrides };
  await operatorOf(config.dataDir); // the trust anchor must exist before the server starts
  const server = await startServer(config, createLogger("debug", sink));
  return Object.assign(server, { logs, dataDir: config.dataDir, token: await authorize(server.url, config.dataDir), config });
}

export interface ChildServer {
  child: ChildProcess;
  url: string;
  dataDir: string;
  /** A root credential with the full scope (test clients send it by default). */
  token: string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

export interface ChildServerOptions {
  /** Data dir to serve from (e.g. the same one across restarts); a fresh one when unset. */
  dataDir?: string;
  /** The server's limit of open files (soft and hard, so Node cannot raise it); the machine's when unset. */
  openFileLimit?: number;
  /** Variables added to this process's environment for the server. */
  env?: NodeJS.ProcessEnv;
}

/** Runs `amctl serve` as a child process and waits for its "serving" log line. */
export async function startChildServer(args: string[] = [], options: ChildServerOptions = {}): Promise<ChildServer> {
  const dataDir = options.dataDir ?? tempDir();
  await operatorOf(dataDir);
  const argv = [
    process.execPath,
    join(repoRoot, "bin/amctl.mjs"),
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--data-dir",
    dataDir,
    ...(args.includes("--policy") ? [] : ["--policy", TEST_POLICIES]),
    ...args,
  ];
  // `exec` keeps the pid: the child is the server itself, with the shell's limit.
  const [command, ...commandArgs] =
    options.openFileLimit === undefined ? argv : ["/bin/sh", "-c", `ulimit -n ${options.openFileLimit} && exec "$@"`, "sh", ...argv];
  const child = spawn(command!, commandArgs, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } });
  let stderr = "";
  const exited = new Promise<number | string>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 20_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"serving"/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.on("exit", () => reject(new Error(`server exited before serving:\n${stderr}`)));
  });
  return { child, url, dataDir, token: await authorize(url, dataDir), stderr: () => stderr, exited };
}
