// Meters one attempt against the budget dimensions a local process uses: compute seconds and
// memory of its process group (process-group.ts), bytes under its workspace
// (workspace-disk.ts), and wall-clock time since it started. It samples every
// SAMPLE_PERIOD_MS (250 ms: a runaway is caught within about a quarter second, at a cost of a
// few milliseconds per sample), tells its owner the first dimension that goes over its limit,
// and reports the usage so far every USAGE_REPORT_PERIOD_MS.
//
// Walking a large workspace takes long, so the walk is skipped in the samples that follow one
// until nine times its duration has passed: metering disk then takes at most a tenth of the
// time, and a runaway writer is caught a little later.
import { create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget, type BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import { dimensionEnum } from "../governance/runtime-charging.js";
import { CLOCK_TICKS_PER_SECOND } from "../process/proc-stat.js";
import { ProcessGroupSampler, type Member } from "../process/process-group.js";
import { workspaceBytes } from "./workspace-disk.js";

const SAMPLE_PERIOD_MS = 250;
const USAGE_REPORT_PERIOD_MS = 2000;

/** The dimensions metered here, in contract order (the order they are checked in). */
const meteredDimensions = ["cpuGpuComputeSeconds", "localDiskBytes", "sandboxMemoryBytes", "wallClockSeconds"] as const;
export type MeteredDimension = (typeof meteredDimensions)[number];

/**
 * Amounts of the metered dimensions, in the budget's units but exact (seconds are fractional).
 * As usage, memory is the peak and disk the latest measurement.
 */
export type Metered = Record<MeteredDimension, number>;

export interface Exhaustion {
  dimension: BudgetDimension;
  /** "<dimension>: what happened", for the stop cause. */
  message: string;
}

const overrun: Record<MeteredDimension, (used: number, limit: number) => string> = {
  cpuGpuComputeSeconds: (used, limit) => `the process group used ${used.toFixed(2)} s of CPU, more than the ${limit} s budgeted`,
  localDiskBytes: (used, limit) => `the workspace holds ${used} bytes, more than the ${limit} budgeted`,
  sandboxMemoryBytes: (used, limit) => `the process group's resident memory reached ${used} bytes, more than the ${limit} budgeted`,
  wallClockSeconds: (_used, limit) => `ran longer than ${limit} s`,
};

export function exhaustion(dimension: MeteredDimension, message: string): Exhaustion {
  return { dimension: dimensionEnum(dimension), message: `${dimension}: ${message}` };
}

/** The first dimension whose use is over its limit; a limit of 0 is no limit. */
export function firstExhausted(used: Metered, limits: Metered): Exhaustion | undefined {
  const dimension = meteredDimensions.find((d) => limits[d] > 0 && used[d] > limits[d]);
  return dimension === undefined ? undefined : exhaustion(dimension, overrun[dimension](used[dimension], limits[dimension]));
}

/** Usage as a Budget: seconds rounded up to whole ones, as the budget counts them. */
export function usageBudget(used: Metered): Budget {
  return create(BudgetSchema, {
    cpuGpuComputeSeconds: BigInt(Math.ceil(used.cpuGpuComputeSeconds)),
    localDiskBytes: BigInt(used.localDiskBytes),
    sandboxMemoryBytes: BigInt(used.sandboxMemoryBytes),
    wallClockSeconds: BigInt(Math.ceil(used.wallClockSeconds)),
  });
}

export interface MeterOptions {
  workspace: string;
  /** Bytes of files under the workspace that do not count (see workspace-disk.ts). */
  diskAllowances: ReadonlyMap<string, number>;
  limits: Metered;
  /** Called once, with the first dimension found over its limit; metering stops then. */
  exhausted(exhaustion: Exhaustion): void;
  /** Called with the usage so far, every USAGE_REPORT_PERIOD_MS while metering. */
  usage(usage: Budget): void;
}

export class UsageMeter {
  private readonly startedAt = Date.now();
  private group?: ProcessGroupSampler;
  private cpuTicks = 0;
  private peakResidentBytes = 0;
  private diskBytes = 0;
  private nextDiskWalk = 0;
  private lastReport = this.startedAt;
  private timer?: NodeJS.Timeout;
  private sampling: Promise<void> = Promise.resolve();
  /** When metering stopped: the wall clock ends there. */
  private stoppedAt?: number;

  constructor(private readonly options: MeterOptions) {}

  /**
   * Starts metering `pid` and what `members` finds of it (by default its process group); the
   * wall clock runs from the meter's creation.
   */
  start(pid: number, members?: (pid: number) => Member[]): void {
    this.group = new ProcessGroupSampler(pid, members);
    this.sampleGroup();
    this.schedule();
  }

  /**
   * Stops sampling and the wall clock, with a last look at the group: call it when the leader
   * has exited, before killing what is left of the group, whose CPU time is lost once it is gone.
   */
  stop(): void {
    this.stoppedAt = Date.now();
    clearTimeout(this.timer);
    this.sampleGroup();
  }

  /** What the attempt used, with the workspace measured once more (after the group is gone, it is final). */
  async final(): Promise<Metered> {
    await this.sampling;
    await this.walkDisk();
    return this.used();
  }

  private used(): Metered {
    return {
      cpuGpuComputeSeconds: this.cpuTicks / CLOCK_TICKS_PER_SECOND,
      localDiskBytes: this.diskBytes,
      sandboxMemoryBytes: this.peakResidentBytes,
      wallClockSeconds: ((this.stoppedAt ?? Date.now()) - this.startedAt) / 1000,
    };
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.sampling = this.sample();
    }, SAMPLE_PERIOD_MS);
  }

  private async sample(): Promise<void> {
    this.sampleGroup();
    if (Date.now() >= this.nextDiskWalk) await this.walkDisk();
    if (this.stoppedAt !== undefined) return;
    const used = this.used();
    const over = firstExhausted(used, this.options.limits);
    if (over !== undefined) {
      this.options.exhausted(over);
      return;
    }
    if (Date.now() - this.lastReport >= USAGE_REPORT_PERIOD_MS) {
      this.lastReport = Date.now();
      this.options.usage(usageBudget(used));
    }
    this.schedule();
  }

  private sampleGroup(): void {
    if (this.group === undefined) return;
    const { cpuTicks, residentBytes } = this.group.sample();
    this.cpuTicks = cpuTicks;
    this.peakResidentBytes = Math.max(this.peakResidentBytes, residentBytes);
  }

  private async walkDisk(): Promise<void> {
    const began = Date.now();
    this.diskBytes = await workspaceBytes(this.options.workspace, this.options.diskAllowances);
    this.nextDiskWalk = Date.now() + 9 * (Date.now() - began);
  }
}
