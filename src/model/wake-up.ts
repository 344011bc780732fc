// A wait that a writer can cut short: used by the event hub and the audit tail, whose readers
// sleep until something new is committed, a timeout passes, or their call ends.

/**
 * Resolves after `ms`, when `signal` aborts, or when the waiter it adds to `waiters` is called
 * (the writer calls every waiter in the set), whichever comes first; the waiter then leaves the set.
 */
export function waitForWakeUp(waiters: Set<() => void>, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      waiters.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
    waiters.add(done);
  });
}
