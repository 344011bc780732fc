// The queue and the slots: executions wait here, in arrival order, for one of the server's
// `maxConcurrent` slots and for room under their agentConcurrency caps (concurrency.ts).
// Other operations never wait for one.
import { context, type Context } from "@opentelemetry/api";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { Logger } from "../api/logger.js";
import type { SlotKey } from "../store/store.js";
import { ConcurrencySlots } from "./concurrency.js";

interface Waiting {
  name: string;
  /** The concurrency caps it runs under; undefined while they are being looked up. */
  keys?: SlotKey[];
  /** The trace context it was queued in (its submit's call), which its attempt's spans continue. */
  origin: Context;
}

export type Queued = Pick<Operation, "name" | "delegation" | "profile">;

export interface ExecutionQueueOptions {
  /** Executions running at once; further ones wait, in order. */
  maxConcurrent: number;
  /** The caps an execution runs under (slotKeysOf in concurrency.ts, over the store). */
  slotKeysOf: (operation: Queued) => Promise<SlotKey[]>;
  /**
   * Runs an execution that got its slot, in the trace context `origin` it was queued in;
   * `done`, called when it has ended, gives the slot back.
   */
  start: (name: string, done: () => void, slots: readonly SlotKey[], origin: Context) => void;
  log: Logger;
}

export class ExecutionQueue {
  /** Executions waiting for a slot, in arrival order. */
  private readonly queue: Waiting[] = [];
  private readonly slots = new ConcurrencySlots();
  private stopping = false;
  private slotsInUse = 0;

  constructor(private readonly options: ExecutionQueueOptions) {}

  /** Queues an execution (at the front: one that waited before); it starts once its caps are known and it fits (see pump). */
  wait(operation: Queued, front = false): void {
    if (this.stopping) return;
    const entry: Waiting = { name: operation.name, origin: context.active() };
    if (front) this.queue.unshift(entry);
    else this.queue.push(entry);
    this.options
      .slotKeysOf(operation)
      .then((keys) => {
        entry.keys = keys;
      })
      .catch((error: unknown) => {
        this.options.log.error({ err: error, operation: operation.name }, "could not look up concurrency caps; the task runs under the server's limit only");
        entry.keys = [];
      })
      .finally(() => this.pump());
  }

  has(name: string): boolean {
    return this.queue.some((entry) => entry.name === name);
  }

  /** Takes a waiting execution out of the queue (it is cancelled). */
  remove(name: string): void {
    const queued = this.queue.findIndex((entry) => entry.name === name);
    if (queued >= 0) this.queue.splice(queued, 1);
  }

  /** Executions running in a slot, and those waiting for one (for the metrics). */
  counts(): { running: number; queued: number } {
    return { running: this.slotsInUse, queued: this.queue.length };
  }

  /** Starts nothing more. */
  stop(): void {
    this.stopping = true;
  }

  /**
   * Starts waiting executions in arrival order while the server has slots: one whose caps are
   * full is passed over (and with it, in effect, every later one under the same caps, so each
   * cap is served first come, first served); one whose caps are still being looked up holds
   * back everything after it.
   */
  private pump(): void {
    for (let i = 0; i < this.queue.length && !this.stopping && this.slotsInUse < this.options.maxConcurrent; ) {
      const entry = this.queue[i]!;
      if (entry.keys === undefined) return;
      if (!this.slots.fits(entry.keys)) {
        i += 1;
        continue;
      }
      this.queue.splice(i, 1);
      const keys = entry.keys;
      this.slotsInUse += 1;
      this.slots.take(keys);
      this.options.start(
        entry.name,
        () => {
          this.slotsInUse -= 1;
          this.slots.release(keys);
          this.pump();
        },
        keys,
        entry.origin,
      );
    }
  }
}
