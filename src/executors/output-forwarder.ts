// Sends one output stream's kept bytes on to an OutputSink as they come, one append at a time:
// bytes that arrive while an append is on its way go together with the next one, so a chatty
// program makes few, larger appends rather than one per pipe read, and a slow sink never sees
// two appends of one stream at once.
import type { OutputSink } from "./executor.js";
import type { OutputStreamName } from "../store/store.js";

/** An append carries at most this much, well within WorkerService.AppendOutput's limit. */
const MAX_APPEND_BYTES = 256 * 1024;

export class OutputForwarder {
  private pending: Buffer[] = [];
  private sent = 0n;
  private flushing: Promise<void> = Promise.resolve();
  private flushQueued = false;
  /** Set once an append failed: nothing more is sent, the sink would see a gap. */
  private failed = false;

  constructor(
    private readonly sink: OutputSink,
    private readonly stream: OutputStreamName,
  ) {}

  push(data: Buffer): void {
    if (this.failed) return;
    this.pending.push(data);
    if (this.flushQueued) return;
    this.flushQueued = true;
    this.flushing = this.flushing.then(() => this.flush());
  }

  /** Sends what is left and then the end; resolves when the sink has it (or gave up). */
  end(truncated: boolean): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      await this.flush();
      await this.send(new Uint8Array(), { truncated });
    });
    return this.flushing;
  }

  private async flush(): Promise<void> {
    this.flushQueued = false;
    const data = Buffer.concat(this.pending);
    this.pending = [];
    for (let start = 0; start < data.length; start += MAX_APPEND_BYTES) await this.send(data.subarray(start, start + MAX_APPEND_BYTES));
  }

  private async send(data: Uint8Array, end?: { truncated: boolean }): Promise<void> {
    if (this.failed) return;
    try {
      await this.sink.append(this.stream, this.sent, data, end);
      this.sent += BigInt(data.length);
    } catch {
      // The sink said why (it logs its own failures); the output goes on into the workspace file only.
      this.failed = true;
    }
  }
}
