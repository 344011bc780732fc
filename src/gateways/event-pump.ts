// Reads a provider's streamed response ahead of the model gateway's charging: while one charge
// is being committed, the stream keeps arriving, so the next step takes all that came in
// meanwhile — as runs of whole events, the bytes as the provider sent them (stream-scan.ts). It
// reads no further than READ_AHEAD_BYTES ahead of the gateway, so a caller slower than the
// provider holds the provider back rather than filling the server's memory.
import type { Readable } from "node:stream";
import { EventRuns, type Framing } from "./stream-scan.js";

const READ_AHEAD_BYTES = 4 * 1024 * 1024;

export class EventPump {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private taken: (() => void) | undefined;
  private waking = false;
  private finished = false;
  private wake: (() => void) | undefined;
  /** Why reading failed, if it did (an abort's reason, a broken connection). */
  failure: unknown;
  private readonly reading: Promise<void>;

  constructor(
    private readonly body: Readable,
    framing: Framing,
  ) {
    const runs = new EventRuns(framing);
    const take = (run: Buffer | undefined) => {
      if (run === undefined) return;
      this.pending.push(run);
      this.pendingBytes += run.length;
      // Woken after the poll phase, so that all the reads of one turn of the event loop are one
      // step of the gateway (one charge check, one write to the caller) rather than one each.
      if (!this.waking) {
        this.waking = true;
        setImmediate(() => {
          this.waking = false;
          this.wake?.();
        });
      }
    };
    this.reading = (async () => {
      try {
        for await (const chunk of body) {
          take(runs.push(chunk as Buffer));
          if (this.pendingBytes > READ_AHEAD_BYTES) await new Promise<void>((resolve) => (this.taken = resolve));
        }
        take(runs.end());
      } catch (error) {
        this.failure = error;
      } finally {
        this.finished = true;
        this.wake?.();
      }
    })();
  }

  /** Every run read since the last call, waiting for one; undefined once the stream has ended and all were taken. */
  async next(): Promise<Buffer[] | undefined> {
    while (this.pending.length === 0) {
      if (this.finished) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    this.pendingBytes = 0;
    this.taken?.();
    this.taken = undefined;
    return this.pending.splice(0);
  }

  /** Stops reading (the rest of the provider's answer is not wanted) and waits until it has. */
  async cancel(): Promise<void> {
    this.body.destroy();
    this.taken?.();
    await this.reading;
  }
}
