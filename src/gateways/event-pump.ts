// Reads a provider's streamed response ahead of the model gateway's charging: while one batch of
// events is being charged (a store commit), the next keeps arriving, so the next batch is all
// that came in meanwhile. A fast provider thus costs one commit per batch, not per read, and the
// gateway forwards at the provider's pace (bench/model-gateway.ts), while every event is still
// charged before it is forwarded.
import type { Readable } from "node:stream";
import { StreamEvents, type StreamEvent } from "./stream-events.js";

export class EventPump {
  private pending: StreamEvent[] = [];
  private finished = false;
  private wake: (() => void) | undefined;
  /** Why reading failed, if it did (an abort's reason, a broken connection). */
  failure: unknown;
  private readonly reading: Promise<void>;

  constructor(
    private readonly body: Readable,
    framing: "sse" | "ndjson",
  ) {
    const events = new StreamEvents(framing);
    this.reading = (async () => {
      try {
        for await (const chunk of body) {
          this.pending.push(...events.push(chunk as Buffer));
          this.wake?.();
        }
        this.pending.push(...events.end());
      } catch (error) {
        this.failure = error;
      } finally {
        this.finished = true;
        this.wake?.();
      }
    })();
  }

  /** Every event read since the last call, waiting for one; undefined once the stream has ended and all were taken. */
  async next(): Promise<StreamEvent[] | undefined> {
    while (this.pending.length === 0) {
      if (this.finished) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    return this.pending.splice(0);
  }

  /** Stops reading (the rest of the provider's answer is not wanted) and waits until it has. */
  async cancel(): Promise<void> {
    this.body.destroy();
    await this.reading;
  }
}
