// `amctl worker`: runs executions for a server started with `amctl serve --workers`, on this
// machine (src/workers/worker-agent.ts). SIGINT or SIGTERM stops it: its tasks are stopped and
// reported failed (retryable), so the server retries them on another worker.
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import type { Level } from "pino";
import { SandboxMode } from "../gen/agentmachine/v1/contract_service_pb.js";
import { WorkerService } from "../gen/agentmachine/v1/worker_service_pb.js";
import { executionIsolation } from "../sandbox/execution-isolation.js";
import { defaultConfig } from "../config/config.js";
import { LOG_LEVELS, createLogger } from "../api/logger.js";
import { WorkerAgent } from "../workers/worker-agent.js";
import { serverOption, serviceClient } from "./client.js";
import { labelFlag } from "./flags.js";

interface WorkerOptions {
  server: string;
  capacity: number;
  labels: Record<string, string>;
  workDir?: string;
  logLevel: string;
  unsafeNoSandbox?: boolean;
  sandboxMaxProcesses: number;
}

function capacityFlag(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1 || value > 1024) throw new InvalidArgumentError(`must be an integer from 1 to 1024, got "${text}"`);
  return value;
}

export function registerWorkerCommand(program: Command): void {
  program
    .command("worker")
    .description("Run executions for a server started with --workers (credential: --token-file, a delegation with worker profiles).")
    .addOption(serverOption())
    .option("--capacity <n>", "tasks run at once", capacityFlag, availableParallelism())
    .option("--labels <key=value>", "a label a task's worker_selector can ask for (repeatable)", labelFlag, {})
    .option(
      "--work-dir <dir>",
      "where task workspaces are made, each removed when its task ends (default: a new private directory under the system's temporary directory)",
    )
    .option("--log-level <level>", `one of ${LOG_LEVELS.join(", ")}`, "info")
    .option("--sandbox-max-processes <n>", "cap on the processes and threads of one task's sandbox", capacityFlag, defaultConfig.sandbox.maxProcesses)
    .option("--unsafe-no-sandbox", "DEVELOPMENT ONLY: run tasks unconfined, as this worker's user")
    .action(async (options: WorkerOptions) => {
      if (!LOG_LEVELS.includes(options.logLevel as Level)) throw new InvalidArgumentError(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
      const log = createLogger(options.logLevel as Level);
      // Like the server: sandboxed, or refuse to run at all unless told --unsafe-no-sandbox.
      const isolation = executionIsolation({
        ...defaultConfig.sandbox,
        unsafeNoSandbox: options.unsafeNoSandbox === true,
        maxProcesses: options.sandboxMaxProcesses,
      });
      if (isolation.mode === SandboxMode.UNAVAILABLE) throw new Error(`amctl worker cannot sandbox tasks: ${isolation.detail}`);
      if (isolation.mode === SandboxMode.DISABLED_UNSAFE) log.warn(isolation.detail);
      // A fresh directory of mode 0700 (mkdtemp) unless one is given: nobody else on the host
      // can have prepared it. Removed when the worker stops.
      const workDir = options.workDir ?? mkdtempSync(join(tmpdir(), "amctl-worker-"));
      const agent = new WorkerAgent({
        client: serviceClient(WorkerService, options.server),
        server: options.server,
        capacity: options.capacity,
        labels: options.labels,
        displayName: hostname(),
        workDir,
        execution: { ...defaultConfig.execution, ...(isolation.sandboxes ? { sandboxes: isolation.sandboxes } : {}) },
        log,
      });
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      process.once("SIGTERM", () => stop.abort());
      await agent.run(stop.signal).finally(() => {
        isolation.sandboxes?.close();
        if (options.workDir === undefined) rmSync(workDir, { recursive: true, force: true });
      });
      log.info("stopped");
    });
}
