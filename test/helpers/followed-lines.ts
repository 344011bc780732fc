// Lines a child process prints, kept as they come, with a wait for the first one that matches:
// for following `amctl` output (test/helpers/cli.ts) and a worker's log (test/helpers/workers.ts).
export class FollowedLines<T> {
  readonly items: T[] = [];
  private readonly waiters = new Set<() => void>();

  push(item: T): void {
    this.items.push(item);
    for (const wake of this.waiters) wake();
  }

  /** The first item (so far or later) for which `match` is true; rejects after `timeoutMs` with `describe()`. */
  waitFor(match: (item: T) => boolean, timeoutMs: number, describe: () => string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = this.items.find(match);
        if (found === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(describe()));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }
}
