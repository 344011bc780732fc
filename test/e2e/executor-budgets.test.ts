// The local process executor enforces every runtime dimension of the requested budget on the
// whole process group, end to end: real sockets, real processes. A program over a limit ends
// failed with cause budget_exhausted naming the dimension, nothing of its group left running;
// one within its budget completes with what it used recorded. Assertions are on outcomes only:
// on a loaded machine a limit is reached later, never differently.
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension, type BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { StopReason, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { budgetDimensions } from "../../src/model/budget-dimensions.js";
import { commandLine, createProfile, execution, operationsClient, processesOf, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const OUTPUT_LIMIT = 4096;
const MiB = 1024 * 1024;
/** Node code that keeps a CPU busy until the process has used `seconds` of CPU time. */
const spinFor = (seconds: number) =>
  `{ const used = () => { const u = process.cpuUsage(); return u.user + u.system; }; const end = used() + ${seconds * 1e6}; while (used() < end); }`;

let server: TestServer;
let client: OperationsClient;
let profile: string;

beforeAll(async () => {
  server = await startTestServer({ execution: { envAllowlist: ["PATH"], outputLimitBytes: OUTPUT_LIMIT, defaultWallClockSeconds: 120, killGraceMs: 500 } });
  client = operationsClient(server.url);
  profile = await createProfile(client, "budgets");
});
afterAll(() => server.close());

function workspaceOf(operation: Operation): string {
  return join(server.dataDir, "workspaces", operation.name.replace("operations/", ""));
}

/**
 * Runs `script` in Node as the leader of a process group that also holds a sleeping member,
 * after `shell` (a command line that may start more members). The group waits (for a file `go`
 * in its workspace) until the test has seen the sleeper and the leader by their host pids, so
 * that `expectGroupGone` cannot pass for lack of anything to look for.
 */
async function runGroup(script: string, budget: MessageInitShape<typeof BudgetSchema>, shell = ""): Promise<Operation> {
  const line = `sleep 600 & until [ -e go ]; do sleep 0.01; done; ${shell} exec "$NODE" -e "$SCRIPT"`;
  const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", line], { env: { NODE: process.execPath, SCRIPT: script } }, budget));
  const name = operation!.name;
  const commands = () => processesOf(name).map(commandLine);
  await expect
    .poll(() => commands().includes("sleep 600") && commands().some((command) => /^\S*sh -c sleep 600 &/.test(command ?? "")), { timeout: 20_000 })
    .toBe(true);
  writeFileSync(join(workspaceOf(operation!), "go"), "");
  return (await waitForEnd(client, name, 60_000)).operation;
}

async function expectGroupGone(operation: Operation): Promise<void> {
  await expect.poll(() => processesOf(operation.name), { timeout: 10_000 }).toEqual([]);
}

function usageOf(operation: Operation) {
  return operation.artifact?.kind.case === "localAgentExecution" ? operation.artifact.kind.value.usage : undefined;
}

async function expectExhausted(operation: Operation, dimension: BudgetDimension): Promise<void> {
  expect(operation.state).toBe(TaskState.FAILED);
  expect(operation.attempt).toBe(1); // not retried: another attempt cannot help
  expect(operation.stopCause).toMatchObject({ reason: StopReason.BUDGET_EXHAUSTED, dimension });
  expect(operation.stopCause?.message.startsWith(`${budgetDimensions[dimension - 1]}: `)).toBe(true);
  await expectGroupGone(operation);
}

describe("over budget: failed with budget_exhausted, the group killed", () => {
  it("memory: a program touching 200 MB against 64 MiB", async () => {
    const operation = await runGroup("const held = Buffer.alloc(200 * 2 ** 20, 1); setInterval(() => held[0]++, 1000)", {
      sandboxMemoryBytes: BigInt(64 * MiB),
    });
    await expectExhausted(operation, BudgetDimension.SANDBOX_MEMORY_BYTES);
    // At least the limit: in a sandbox the kernel's memory cgroup holds the charge at the limit itself.
    expect(usageOf(operation)?.sandboxMemoryBytes).toBeGreaterThanOrEqual(BigInt(64 * MiB));
  });

  it("disk: a program writing a MiB after another into its workspace against 4 MiB", async () => {
    const script = "const fs = require('fs'); let n = 0; setInterval(() => fs.writeFileSync('fill' + n++, Buffer.alloc(2 ** 20, 1)), 20)";
    const operation = await runGroup(script, { localDiskBytes: BigInt(4 * MiB) });
    await expectExhausted(operation, BudgetDimension.LOCAL_DISK_BYTES);
    expect(usageOf(operation)?.localDiskBytes).toBeGreaterThan(BigInt(4 * MiB));
  });

  it("compute: a busy loop against 1 second", async () => {
    const operation = await runGroup("for (;;) {}", { cpuGpuComputeSeconds: 1n });
    await expectExhausted(operation, BudgetDimension.CPU_GPU_COMPUTE_SECONDS);
  });

  it("compute: members that each stay under the limit, and exit, count together", async () => {
    // Four runs of 0.7 s of CPU one after another, each reaped by the shell: no process reaches
    // the kernel's per-process limit of 1 s, the group does.
    const spin = `"$NODE" -e '${spinFor(0.7)}';`;
    const operation = await runGroup("setInterval(() => {}, 1000)", { cpuGpuComputeSeconds: 1n }, spin.repeat(4));
    await expectExhausted(operation, BudgetDimension.CPU_GPU_COMPUTE_SECONDS);
    expect(usageOf(operation)?.cpuGpuComputeSeconds).toBeGreaterThanOrEqual(2n);
  });

  it("wall clock: a sleeper against 1 second", async () => {
    const operation = await runGroup("setTimeout(() => {}, 600_000)", { wallClockSeconds: 1n });
    await expectExhausted(operation, BudgetDimension.WALL_CLOCK_SECONDS);
    expect(operation.stopCause?.message).toBe("wallClockSeconds: ran longer than 1 s");
  });
});

describe("output", () => {
  it("is not a budget: runaway output is dropped beyond the limit and the execution completes with output_truncated", async () => {
    const operation = await runGroup("for (let i = 0; i < 20; i++) process.stdout.write('x'.repeat(2 ** 20)); process.exit(0)", {});
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(operation.artifact?.kind).toMatchObject({ value: { stdoutBytes: BigInt(OUTPUT_LIMIT), outputTruncated: true } });
    expect(statSync(join(workspaceOf(operation), "stdout.1.log")).size).toBe(OUTPUT_LIMIT);
    // The capture log is the server's, bounded by the output limit: it is not counted as the task's disk.
    expect(usageOf(operation)?.localDiskBytes).toBeLessThan(BigInt(OUTPUT_LIMIT));
    await expectGroupGone(operation);
  });
});

describe("within budget", () => {
  it("completes with compute, memory, disk and wall clock recorded as usage", async () => {
    const script = [
      "const fs = require('fs');",
      "const held = Buffer.alloc(32 * 2 ** 20, 1);",
      "fs.writeFileSync('result', Buffer.alloc(100000, 1));",
      spinFor(0.6),
      // Held a while after the work, so the meter sees it at its peak.
      "setTimeout(() => held[0]++, 1500);",
    ].join(" ");
    const budget = { cpuGpuComputeSeconds: 30n, sandboxMemoryBytes: BigInt(1024 * MiB), localDiskBytes: BigInt(16 * MiB), wallClockSeconds: 60n };
    const operation = await runGroup(script, budget);
    expect(operation.state).toBe(TaskState.COMPLETED);
    const usage = usageOf(operation);
    expect(usage?.cpuGpuComputeSeconds).toBeGreaterThanOrEqual(1n);
    expect(usage?.sandboxMemoryBytes).toBeGreaterThanOrEqual(BigInt(32 * MiB));
    expect(usage?.localDiskBytes).toBeGreaterThanOrEqual(100000n);
    expect(usage?.wallClockSeconds).toBeGreaterThanOrEqual(2n);
    // The operation's usage is the attempt's.
    expect(operation.usage).toMatchObject({
      cpuGpuComputeSeconds: usage?.cpuGpuComputeSeconds,
      sandboxMemoryBytes: usage?.sandboxMemoryBytes,
      localDiskBytes: usage?.localDiskBytes,
      wallClockSeconds: usage?.wallClockSeconds,
    });
    await expectGroupGone(operation);
  });
});
