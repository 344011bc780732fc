// Metering an attempt: which dimension is over its limit, usage in budget units, the bytes a
// workspace holds, the kernel's CPU time limit, and usage reported while a process runs.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, lstatSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CPU_LIMIT_SIGNAL, limitCpuSeconds } from "../../src/executors/cpu-limit.js";
import { LocalProcessExecutor } from "../../src/executors/local-process.js";
import { firstExhausted, usageBudget, type Metered } from "../../src/executors/usage-meter.js";
import { workspaceBytes } from "../../src/executors/workspace-disk.js";
import { BudgetDimension, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { OperationSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { tempDir } from "../helpers/temp-dir.js";

const none: Metered = { cpuGpuComputeSeconds: 0, localDiskBytes: 0, sandboxMemoryBytes: 0, wallClockSeconds: 0 };

describe("firstExhausted", () => {
  it("finds nothing within the limits, at a limit, or where the limit is 0 (none)", () => {
    const limits = { ...none, cpuGpuComputeSeconds: 2, sandboxMemoryBytes: 100 };
    expect(firstExhausted({ ...none, cpuGpuComputeSeconds: 2, sandboxMemoryBytes: 99, localDiskBytes: 1e12, wallClockSeconds: 1e6 }, limits)).toBeUndefined();
  });

  it("names the first dimension over its limit in contract order, its message starting with the dimension", () => {
    const limits = { cpuGpuComputeSeconds: 2, localDiskBytes: 10, sandboxMemoryBytes: 100, wallClockSeconds: 5 };
    expect(firstExhausted({ ...none, sandboxMemoryBytes: 101, wallClockSeconds: 6 }, limits)).toEqual({
      dimension: BudgetDimension.SANDBOX_MEMORY_BYTES,
      message: "sandboxMemoryBytes: the process group's resident memory reached 101 bytes, more than the 100 budgeted",
    });
    expect(firstExhausted({ ...none, cpuGpuComputeSeconds: 2.01, localDiskBytes: 11 }, limits)).toMatchObject({
      dimension: BudgetDimension.CPU_GPU_COMPUTE_SECONDS,
      message: expect.stringMatching(/^cpuGpuComputeSeconds: /),
    });
    expect(firstExhausted({ ...none, localDiskBytes: 11 }, limits)?.dimension).toBe(BudgetDimension.LOCAL_DISK_BYTES);
    expect(firstExhausted({ ...none, wallClockSeconds: 5.2 }, limits)).toEqual({
      dimension: BudgetDimension.WALL_CLOCK_SECONDS,
      message: "wallClockSeconds: ran longer than 5 s",
    });
  });
});

describe("usageBudget", () => {
  it("rounds seconds up to whole ones and keeps bytes as they are", () => {
    const usage = usageBudget({ cpuGpuComputeSeconds: 0.01, localDiskBytes: 4096, sandboxMemoryBytes: 52_428_800, wallClockSeconds: 3 });
    expect(usage).toMatchObject({ cpuGpuComputeSeconds: 1n, localDiskBytes: 4096n, sandboxMemoryBytes: 52_428_800n, wallClockSeconds: 3n, tokens: 0n });
    expect(usageBudget(none).cpuGpuComputeSeconds).toBe(0n);
  });
});

describe("workspaceBytes", () => {
  it("adds up every entry below the workspace without following links, files under an allowance counting only beyond it", async () => {
    const workspace = tempDir();
    writeFileSync(join(workspace, "a"), Buffer.alloc(1000));
    mkdirSync(join(workspace, "sub"));
    writeFileSync(join(workspace, "sub", "b"), Buffer.alloc(2000));
    symlinkSync("/", join(workspace, "root"));
    writeFileSync(join(workspace, "stdout.1.log"), Buffer.alloc(5000));
    writeFileSync(join(workspace, "stderr.1.log"), Buffer.alloc(100));
    const allowances = new Map([join(workspace, "stdout.1.log"), join(workspace, "stderr.1.log")].map((path) => [path, 4096]));
    const expected = 1000 + 2000 + lstatSync(join(workspace, "sub")).size + lstatSync(join(workspace, "root")).size + (5000 - 4096);
    expect(await workspaceBytes(workspace, allowances)).toBe(expected);
  });

  it("is 0 for a workspace that does not exist", async () => {
    expect(await workspaceBytes(join(tempDir(), "missing"), new Map())).toBe(0);
  });
});

const hasPrlimit = spawnSync("prlimit", ["--version"]).error === undefined;

describe("limitCpuSeconds", () => {
  it.skipIf(!hasPrlimit)("has the kernel stop a process at its CPU time limit with SIGXCPU", async () => {
    const spinner = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" });
    limitCpuSeconds(spinner.pid!, 1);
    const [, signal] = (await new Promise((resolve) => spinner.once("exit", (...exit) => resolve(exit)))) as [number | null, NodeJS.Signals | null];
    expect(signal).toBe(CPU_LIMIT_SIGNAL);
  });
});

describe("usage as it accrues", () => {
  it("is reported to attempt.usage while the process runs, each report at most the final usage", async () => {
    const script =
      "{ const used = () => { const u = process.cpuUsage(); return u.user + u.system; }; const end = used() + 300000; while (used() < end); } setTimeout(() => {}, 4500)";
    const operation = create(OperationSchema, {
      name: "operations/metered",
      spec: { kind: { case: "executionStart", value: { argv: [process.execPath, "-e", script] } } },
      requestedBudget: { cpuGpuComputeSeconds: 60n, sandboxMemoryBytes: 1n << 30n, localDiskBytes: 1n << 30n, wallClockSeconds: 60n },
    });
    const reports: Budget[] = [];
    const executor = new LocalProcessExecutor({ envAllowlist: ["PATH"], outputLimitBytes: 1024, defaultWallClockSeconds: 60, killGraceMs: 500 });
    const outcome = await executor.run({
      operation,
      attempt: 1,
      workspace: tempDir(),
      signal: new AbortController().signal,
      env: {},
      progress: () => {},
      spawned: () => {},
      usage: (usage) => reports.push(usage),
    });
    expect(outcome.kind).toBe("completed");
    const final = outcome.usage!;
    // One report every two seconds at most, so at least one in four and a half.
    expect(reports.length).toBeGreaterThanOrEqual(1);
    expect(reports.length).toBeLessThanOrEqual(Number(final.wallClockSeconds) / 2 + 1);
    expect(reports[0]!.wallClockSeconds).toBeGreaterThanOrEqual(2n);
    expect(reports[0]!.sandboxMemoryBytes).toBeGreaterThan(0n);
    for (const report of reports) {
      for (const dimension of ["cpuGpuComputeSeconds", "sandboxMemoryBytes", "wallClockSeconds"] as const)
        expect(report[dimension]).toBeLessThanOrEqual(final[dimension]);
    }
    expect(final.cpuGpuComputeSeconds).toBeGreaterThanOrEqual(1n);
  });
});
