// Turns for the history pages of replays (WatchEvents, WatchOperation, WatchAuditRecords), shared
// by every stream of a server: at most `inFlight` pages run at once, and one page starts per turn
// of the event loop (setImmediate), so the I/O of other calls — a health check — runs between any
// two pages even when the store reads on the event loop. Replays wait first come, first served,
// and each asks for at most two pages at a time (the one it sends and the next), so turns go
// round-robin between them: a hundred replays of a long history share the store with each other
// and with everything else.
import { setImmediate } from "node:timers";

export class ReplayScheduler {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private startPending = false;

  constructor(private readonly inFlight: number) {}

  /** Runs `page` in its turn; undefined, without running it, when `signal` aborts first. */
  async run<T>(page: () => Promise<T>, signal: AbortSignal): Promise<T | undefined> {
    if (!(await this.turn(signal))) return undefined;
    try {
      return await page();
    } finally {
      this.running -= 1;
      this.startNext();
    }
  }

  /** Resolves true when it is this caller's turn (and counts it as running), false once `signal` aborts. */
  private turn(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const start = () => {
        signal.removeEventListener("abort", leave);
        resolve(true);
      };
      const leave = () => {
        const at = this.waiting.indexOf(start);
        if (at >= 0) this.waiting.splice(at, 1);
        resolve(false);
      };
      signal.addEventListener("abort", leave, { once: true });
      this.waiting.push(start);
      this.startNext();
    });
  }

  /** Starts the first waiting page on the next turn of the event loop, if a slot is free by then. */
  private startNext(): void {
    if (this.startPending || this.running >= this.inFlight || this.waiting.length === 0) return;
    this.startPending = true;
    setImmediate(() => {
      this.startPending = false;
      if (this.running >= this.inFlight) return;
      const start = this.waiting.shift();
      if (start === undefined) return;
      this.running += 1;
      start();
      this.startNext();
    });
  }
}
