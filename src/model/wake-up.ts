// A wait that a writer can cut short: used by the event hub and the audit tail, whose readers
// sleep until something new is committed, a timeout passes, or their call ends.
//
// Thousands of idle watch streams each sleep in such a wait for hours, so a wait holds as little
// as it can: one Sleeper (no closure, promise executor or Timeout of its own) filed in one shared
// deadline heap, which keeps a single timer armed for the earliest deadline of all sleepers.

/** What a writer wakes: each waiter in its set. */
export interface Waiter {
  wake(): void;
}

/**
 * A sleeping reader: woken by its writer (through the set), by its signal (it is its own abort
 * listener), or at its deadline. Methods, not closures: nothing of it is made per wait but itself.
 */
class Sleeper implements Waiter {
  /** Where it sits in the deadline heap; -1 once woken. */
  index = -1;

  constructor(
    readonly due: number,
    private readonly waiters: Set<Waiter>,
    private readonly signal: AbortSignal,
    private readonly resolve: () => void,
  ) {}

  /** Called by the writer, by the heap at the deadline, or (through handleEvent) by the signal. */
  wake(): void {
    deadlines.remove(this);
    this.signal.removeEventListener("abort", this);
    this.waiters.delete(this);
    this.resolve();
  }

  handleEvent(): void {
    this.wake();
  }
}

/** Sleepers by deadline (a binary min-heap, on the monotonic clock as timers are), with one timer armed for the earliest. */
class DeadlineHeap {
  private readonly heap: Sleeper[] = [];
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Number.POSITIVE_INFINITY;

  /** Sleepers filed, for tests: a woken or aborted wait leaves nothing here. */
  get size(): number {
    return this.heap.length;
  }

  add(sleeper: Sleeper): void {
    sleeper.index = this.heap.length;
    this.heap.push(sleeper);
    this.up(sleeper.index);
    this.arm();
  }

  remove(sleeper: Sleeper): void {
    const at = sleeper.index;
    if (at < 0) return;
    sleeper.index = -1;
    const last = this.heap.pop()!;
    if (last !== sleeper) {
      this.heap[at] = last;
      last.index = at;
      this.down(at);
      this.up(last.index);
    }
    if (this.heap.length === 0) this.disarm();
  }

  /** Wakes every sleeper whose deadline has passed, then arms the timer for the next one. */
  private expire(): void {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = performance.now();
    while (this.heap.length > 0 && this.heap[0]!.due <= now) this.heap[0]!.wake();
    this.arm();
  }

  private arm(): void {
    const first = this.heap[0];
    if (first === undefined || first.due >= this.armedFor) return;
    this.disarm();
    this.armedFor = first.due;
    this.timer = setTimeout(() => this.expire(), Math.max(0, first.due - performance.now()));
  }

  private disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
  }

  private up(at: number): void {
    const { heap } = this;
    for (let parent = (at - 1) >> 1; at > 0 && heap[at]!.due < heap[parent]!.due; at = parent, parent = (at - 1) >> 1) this.swap(at, parent);
  }

  private down(at: number): void {
    const { heap } = this;
    for (;;) {
      const left = 2 * at + 1;
      const right = left + 1;
      let smallest = at;
      if (left < heap.length && heap[left]!.due < heap[smallest]!.due) smallest = left;
      if (right < heap.length && heap[right]!.due < heap[smallest]!.due) smallest = right;
      if (smallest === at) return;
      this.swap(at, smallest);
      at = smallest;
    }
  }

  private swap(a: number, b: number): void {
    const { heap } = this;
    [heap[a], heap[b]] = [heap[b]!, heap[a]!];
    heap[a]!.index = a;
    heap[b]!.index = b;
  }
}

const deadlines = new DeadlineHeap();

/** How many waits are sleeping (for tests: a wait that ended, however, is no longer counted). */
export function sleepingWaits(): number {
  return deadlines.size;
}

/**
 * Resolves after `ms`, when `signal` aborts, or when the waiter it adds to `waiters` is called
 * (the writer calls every waiter in the set), whichever comes first; the waiter then leaves the set.
 */
export function waitForWakeUp(waiters: Set<Waiter>, ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const sleeper = new Sleeper(performance.now() + ms, waiters, signal, resolve);
    deadlines.add(sleeper);
    signal.addEventListener("abort", sleeper);
    waiters.add(sleeper);
  });
}

/** Wakes every waiter in `waiters` (each leaves the set as it wakes). */
export function wakeAll(waiters: Iterable<Waiter>): void {
  for (const waiter of [...waiters]) waiter.wake();
}
