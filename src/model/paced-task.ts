// A task that runs in a later turn of the event loop when asked, and after each run rests for a
// multiple of the time that run took: however often it is asked, it takes at most
// 1 / (1 + pace) of the event loop's time, and whatever it is asked for while it rests is done
// in its next run. The event hub delivers live events this way (event-hub.ts), so that the
// writes to thousands of watch streams cannot crowd out the calls that commit those events.

export class PacedTask {
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** When the rest after the last run ends (performance.now()). */
  private restsUntil = 0;

  /**
   * `pace`: the rest after a run, as a multiple of the time the run took. `run` is the task;
   * it must not throw (nothing would be there to catch it).
   */
  constructor(
    private readonly run: () => void,
    private readonly pace: number,
  ) {}

  /** Asks for a run: once the rest after the last one has passed, or in the next turn when `urgent`. */
  request(urgent: boolean): void {
    if (this.immediate !== undefined) return;
    const wait = urgent ? 0 : this.restsUntil - performance.now();
    // Timers count whole milliseconds: a shorter rest is over by the next turn.
    if (wait >= 1) {
      this.timer ??= setTimeout(this.fire, Math.ceil(wait)).unref();
      return;
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.immediate = setImmediate(this.fire);
  }

  private readonly fire = (): void => {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.immediate = undefined;
    const started = performance.now();
    this.run();
    const ended = performance.now();
    this.restsUntil = ended + (ended - started) * this.pace;
  };
}
