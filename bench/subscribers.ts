// Many WatchEvents subscribers, held by a few bench/stream-worker.ts processes over a few HTTP/2
// connections each, driven together.
import * as http2 from "node:http2";
import { credentialEnv } from "./credentials.js";
import { withTimeout, WorkerProcess, type Endpoint } from "./processes.js";
import { split } from "./stats.js";
import type { StreamAnswer, StreamCommand } from "./stream-worker.js";

type Answer<Op extends StreamAnswer["op"]> = Extract<StreamAnswer, { op: Op }>;

/** Sends a command to a stream worker and returns its answer, or throws what went wrong. */
export async function ask<Op extends StreamAnswer["op"]>(worker: WorkerProcess, command: StreamCommand, expected: Op, timeoutMs: number): Promise<Answer<Op>> {
  const answer = await worker.request<StreamAnswer>(command, timeoutMs);
  if (answer.op === "failed") throw new Error(`${worker.label}: ${command.op} failed: ${answer.error} (${answer.failedStreams} streams failed)`);
  if (answer.op !== expected) throw new Error(`${worker.label}: expected ${expected}, got ${JSON.stringify(answer)}`);
  return answer as Answer<Op>;
}

export function startStreamWorker(server: Endpoint, label: string): WorkerProcess {
  return new WorkerProcess(label, "bench/stream-worker.ts", ["--url", server.url], credentialEnv(server.token));
}

export class SubscriberGroup {
  private constructor(
    private readonly parts: { worker: WorkerProcess; subscribers: number }[],
    /** HTTP/2 connections over all processes. */
    readonly connections: number,
  ) {}

  /**
   * Starts min(subscribers, processes) stream workers and opens, in each, enough connections
   * for its share of the subscribers at `perConnection` streams a connection. No stream yet.
   */
  static async connect(server: Endpoint, subscribers: number, processes: number, perConnection: number): Promise<SubscriberGroup> {
    const parts = split(subscribers, processes).map((share, index) => ({
      worker: startStreamWorker(server, `stream worker ${index + 1} (${share} subscribers)`),
      subscribers: share,
    }));
    const group = new SubscriberGroup(
      parts,
      parts.reduce((sum, part) => sum + Math.ceil(part.subscribers / perConnection), 0),
    );
    try {
      await Promise.all(
        parts.map(({ worker, subscribers: share }) => ask(worker, { op: "connect", connections: Math.ceil(share / perConnection) }, "connected", 60_000)),
      );
    } catch (error) {
      await group.stop();
      throw error;
    }
    return group;
  }

  /** Opens every subscriber from `after`; resolves once each has received event after + 1. */
  async open(after: bigint, timeoutMs = 180_000): Promise<void> {
    await Promise.all(this.parts.map(({ worker, subscribers }) => ask(worker, { op: "open", subscribers, after: String(after) }, "opened", timeoutMs)));
  }

  /**
   * Resolves once every subscriber has received event `sequence`, with the time (performance.now()
   * of this process) the last answer arrived, the fewest and most events any subscriber
   * received meanwhile, and how many times subscribers were cut off as slow and resumed.
   */
  async until(sequence: bigint, timeoutMs: number): Promise<{ at: number; minEvents: number; maxEvents: number; resumed: number }> {
    const answers = await Promise.all(
      this.parts.map(async ({ worker }) => ({
        answer: await ask(worker, { op: "until", sequence: String(sequence) }, "reached", timeoutMs),
        at: performance.now(),
      })),
    );
    return {
      at: Math.max(...answers.map(({ at }) => at)),
      minEvents: Math.min(...answers.map(({ answer }) => answer.minEvents)),
      maxEvents: Math.max(...answers.map(({ answer }) => answer.maxEvents)),
      resumed: answers.reduce((sum, { answer }) => sum + answer.resumed, 0),
    };
  }

  /** Cancels every stream and ends the processes. */
  async stop(): Promise<void> {
    await Promise.all(this.parts.map(({ worker }) => worker.stop()));
  }
}

/** The SETTINGS_MAX_CONCURRENT_STREAMS the server announces on a new HTTP/2 connection. */
export async function announcedMaxConcurrentStreams(url: string): Promise<number | undefined> {
  const session = http2.connect(url);
  try {
    return await withTimeout(
      new Promise<number | undefined>((resolve, reject) => {
        session.once("remoteSettings", (settings) => resolve(settings.maxConcurrentStreams));
        session.once("error", reject);
      }),
      10_000,
      "no SETTINGS from the server within 10 s",
    );
  } finally {
    session.close();
  }
}
