// Reads a provider's streamed response ahead of the model gateway's charging: while one charge
// is being committed, the stream keeps arriving, so the next step takes all that came in
// meanwhile — one run of whole events, the bytes as the provider sent them (stream-scan.ts). A
// provider writes each event on its own (an HTTP chunk each, tens of thousands per completion),
// so nothing here is done per chunk but keep it: the chunks read since the gateway's last step
// are joined and cut at the last event boundary once, when it takes them (bench/model-gateway.ts). It reads no further than READ_AHEAD_BYTES ahead of the gateway, so a
// caller slower than the provider holds the provider back rather than filling the server's memory.
import { finished, type Readable } from "node:stream";
import { EventRuns, type Framing } from "./stream-scan.js";

const READ_AHEAD_BYTES = 4 * 1024 * 1024;

export class EventPump {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private readonly runs: EventRuns;
  private waking = false;
  private ended = false;
  private wake: (() => void) | undefined;
  /** Why reading failed, if it did (an abort's reason, a broken connection). */
  failure: unknown;
  private readonly done: Promise<void>;

  constructor(
    private readonly body: Readable,
    framing: Framing,
    private readonly readAheadBytes = READ_AHEAD_BYTES,
  ) {
    this.runs = new EventRuns(framing);
    body.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
      if (this.bytes > this.readAheadBytes) body.pause();
      // Woken after the poll phase, so that all the reads of one turn of the event loop are one
      // step of the gateway (one charge check, one write to the caller) rather than one each.
      if (!this.waking) {
        this.waking = true;
        setImmediate(() => {
          this.waking = false;
          this.wake?.();
        });
      }
    });
    this.done = new Promise((resolve) =>
      finished(body, (error) => {
        this.failure = error;
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  /**
   * The whole events read since the last call, as one run, waiting for one; an unfinished last
   * event is held back until its end comes (or the stream's). Undefined once the stream has
   * ended (see failure) and all was taken.
   */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      if (this.chunks.length > 0) {
        const read = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes);
        this.chunks = [];
        this.bytes = 0;
        if (this.body.isPaused()) this.body.resume();
        const run = this.runs.push(read);
        if (run !== undefined) return run;
      }
      // A stream that broke off leaves its unfinished event unsent.
      if (this.ended) return this.failure === undefined ? this.runs.end() : undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }

  /** Stops reading (the rest of the provider's answer is not wanted) and waits until it has. */
  async cancel(): Promise<void> {
    this.body.destroy();
    await this.done;
  }
}
