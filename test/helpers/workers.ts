// `amctl worker` as a child process, its log lines followed as they come (a worker logs JSON
// to stderr: "connected" with its name, "assigned" with each lease), so that a test can see
// which worker took which task and kill one mid-task.
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { mintRoot, operatorOf } from "./auth.js";
import { FollowedLines } from "./followed-lines.js";
import { repoRoot, tempDir } from "./temp-dir.js";

export interface WorkerProcess {
  child: ChildProcess;
  /** `workers/{id}` once connected. */
  name: () => Promise<string>;
  /** Log lines so far, parsed. */
  logs: Record<string, unknown>[];
  /** The first log line (so far or later) for which `match` is true. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The file holding the worker's credential. */
  tokenFile: string;
  /** Where its task workspaces are made (its --work-dir); undefined when it chose one itself. */
  workDir: string | undefined;
  exited: Promise<number | string>;
}

/** A credential that may act as a worker for `profiles` and do nothing else. */
export async function workerToken(dataDir: string, subject: string, profiles: string[] = ["*"]): Promise<string> {
  return mintRoot(await operatorOf(dataDir), { subject, scope: { workerProfiles: profiles } });
}

/** `amctl worker` against `url`; its workspaces go to a test directory unless `defaultWorkDir`. */
export function startWorker(url: string, token: string, args: string[] = [], defaultWorkDir = false): WorkerProcess {
  const dir = tempDir();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const workDir = defaultWorkDir ? undefined : join(dir, "work");
  const child = spawn(
    process.execPath,
    [join(repoRoot, "bin/amctl.mjs"), "--token-file", tokenFile, "worker", "--server", url, ...(workDir !== undefined ? ["--work-dir", workDir] : []), ...args],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  const logs = new FollowedLines<Record<string, unknown>>();
  createInterface({ input: child.stderr! }).on("line", (line) => {
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      logs.push({ msg: line });
    }
  });
  const exited = new Promise<number | string>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));
  const waitForLog = (match: (line: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> =>
    logs.waitFor(match, timeoutMs, () => `no matching worker log line within ${timeoutMs} ms:\n${logs.items.map((l) => JSON.stringify(l)).join("\n")}`);
  return {
    child,
    logs: logs.items,
    waitForLog,
    name: async () => (await waitForLog((line) => line.msg === "connected")).worker as string,
    tokenFile,
    workDir,
    exited,
  };
}

/** Stops a worker (SIGTERM) and waits for it to exit. */
export async function stopWorker(worker: WorkerProcess): Promise<void> {
  if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill("SIGTERM");
  await worker.exited;
}
