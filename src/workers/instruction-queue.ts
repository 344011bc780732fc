// The instructions waiting for one worker: pushed by the pool, pulled by the worker's Connect
// stream as fast as it reads them. The queue outlives a stream, so what is pushed while the
// worker reconnects reaches its next stream.
export class InstructionQueue<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.wake?.();
  }

  /** Ends every drain for good. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  /** Yields items in order until the queue is closed or `signal` aborts (items left stay queued). */
  async *drain(signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = (): void => this.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!this.closed && !signal.aborted) {
        const item = this.items.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}
