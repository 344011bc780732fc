// `amctl` as a child process, the way a user or a script runs it: to completion, or (for
// long-lived commands) followed line by line and stopped with SIGINT.
import { execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { FollowedLines } from "./followed-lines.js";
import { repoRoot, type ChildServer } from "./server.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const amctlPath = join(repoRoot, "bin/amctl.mjs");

/** Runs `amctl ARGS...` to completion; never rejects: a failure is a non-zero `code`. */
export function amctl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [amctlPath, ...args], { cwd: repoRoot, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RunningCli {
  /** Lines of stdout so far. */
  lines: string[];
  /** Resolves with the first line (seen so far or later) for which `match` is true. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves when the process has exited, with its exit code (null if a signal killed it) and stderr. */
  exited: Promise<{ code: number | null; stderr: string }>;
  /** Sends SIGINT, then waits for the exit. */
  interrupt(): Promise<{ code: number | null; stderr: string }>;
}

/** Starts `amctl ARGS...` and follows its stdout line by line. */
export function spawnAmctl(args: string[], env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [amctlPath, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines = new FollowedLines<string>();
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on("close", (code) => resolve({ code, stderr })));
  return {
    lines: lines.items,
    waitForLine: (match, timeoutMs = 20_000) =>
      lines.waitFor(match, timeoutMs, () => `no matching line within ${timeoutMs} ms; stdout:\n${lines.items.join("\n")}\nstderr:\n${stderr}`),
    exited,
    interrupt() {
      child.kill("SIGINT");
      return exited;
    },
  };
}

/**
 * Runs `examples/SCRIPT DATA_DIR URL` against `server` (an `amctl serve` child), then
 * `inspect(server)` if given, then stops the server whatever happened. Resolves with the
 * script's stdout; a failing script rejects with everything it printed. The server's log must
 * not hold the test's credential.
 */
export async function runExampleAgainst(script: string, server: ChildServer, env: NodeJS.ProcessEnv = {}, inspect?: () => Promise<void>): Promise<string> {
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        "bash",
        [join(repoRoot, "examples", script), server.dataDir, server.url],
        { cwd: "/tmp", env: { ...process.env, ...env } },
        (error, out, err) => {
          if (error === null) resolve(out);
          else reject(new Error(`examples/${script} failed:\n${out}\n${err}`));
        },
      );
    });
    if (server.stderr().includes(server.token)) throw new Error("the server logged a credential");
    await inspect?.();
    return stdout;
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
  }
}
