// A running execution whose credential the bench borrows. Only an execution's own credential may
// call RuntimeService, for its own operation, and the server hands it only to the process it
// starts (AMCTL_TOKEN). So the bench runs a process that writes its AMCTL_TOKEN to a file in its
// workspace and then idles; it reads the file from the server's data dir, and cancels the
// execution when it is done.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { TaskState } from "../src/gen/agentmachine/v1/types_pb.js";
import { sleep, type BenchServer } from "./processes.js";
import { requestIds, waitForEnd, type OperationsClient } from "./records.js";

/** Far more than a run spends (a tool call charges one connector call), so the budget never runs out mid-run. */
const ABUNDANT = 1_000_000_000n;
/** A day, as long as the bench's own credential lives: the execution, and so its credential, must outlast every load run. */
const WALL_CLOCK_SECONDS = 86_400n;
const START_TIMEOUT_MS = 30_000;

// The token goes to a temporary name first and is then renamed, so the bench never reads a
// half-written file. The process idles until cancelled, or leaves by itself once its parent,
// the server, is gone (it is reparented): a server killed with SIGKILL does not stop its
// executions' process groups.
const IDLE_WITH_TOKEN = [
  `const fs = require("fs");`,
  `fs.writeFileSync("token.tmp", process.env.AMCTL_TOKEN);`,
  `fs.renameSync("token.tmp", "token");`,
  `const parent = process.ppid;`,
  `setInterval(() => process.ppid !== parent && process.exit(0), 1000);`,
].join(" ");

export interface BenchExecution {
  /** `operations/{id}` */
  name: string;
  /** The credential of its running attempt. */
  token: string;
}

/** Starts the execution in `profile` and waits until its credential can be read. */
export async function startExecution(client: OperationsClient, server: BenchServer, profile: string): Promise<BenchExecution> {
  const { operation } = await client.submitOperation({
    requestId: requestIds("bench-execution")(),
    profile,
    spec: { kind: { case: "executionStart", value: { argv: [process.execPath, "-e", IDLE_WITH_TOKEN] } } },
    requestedBudget: { modelCalls: ABUNDANT, tokens: ABUNDANT, connectorCalls: ABUNDANT, wallClockSeconds: WALL_CLOCK_SECONDS },
  });
  const name = operation!.name;
  const path = join(server.dataDir, "workspaces", name.replace("operations/", ""), "token");
  const deadline = performance.now() + START_TIMEOUT_MS;
  while (!existsSync(path)) {
    if (performance.now() > deadline) {
      const { operation: now } = await client.getOperation({ name });
      const why = now!.stopCause ? `: ${now!.stopCause.reason} ${now!.stopCause.message}` : "";
      throw new Error(`${name} wrote no credential within ${START_TIMEOUT_MS / 1000} s (${TaskState[now!.state]}${why})`);
    }
    await sleep(50);
  }
  return { name, token: readFileSync(path, "utf8") };
}

/** Cancels the execution and waits until it has ended. */
export async function cancelExecution(client: OperationsClient, execution: BenchExecution): Promise<void> {
  await client.cancelOperation({ name: execution.name, reason: "the benchmark is done" });
  const { operation } = await waitForEnd(client, execution.name);
  if (operation.state !== TaskState.CANCELLED) throw new Error(`${execution.name} ended in ${TaskState[operation.state]}, not CANCELLED`);
}
