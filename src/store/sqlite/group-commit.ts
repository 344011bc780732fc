// Group commit for a synchronous SQLite connection: writes requested in the same event-loop
// turn run in one transaction (one fsync), each in its own savepoint so one failing write does
// not fail the others. Nothing is acknowledged before the transaction is durable.
import type { Database } from "better-sqlite3";

interface Job {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export class GroupCommit {
  private queue: Job[] = [];
  private scheduled = false;

  /**
   * `afterBatch(true)` runs once per committed batch, before any of its writers is answered;
   * `afterBatch(false)` when the batch's transaction failed and nothing of it was written.
   */
  constructor(
    private readonly db: Database,
    private readonly afterBatch: (committed: boolean) => void,
  ) {}

  submit<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      this.db.transaction(() => {
        for (const job of batch) {
          try {
            // A transaction inside a transaction is a savepoint in better-sqlite3.
            outcomes.push({ ok: true, value: this.db.transaction(job.run)() });
          } catch (error) {
            outcomes.push({ ok: false, value: error });
          }
        }
      })();
    } catch (error) {
      this.afterBatch(false);
      for (const job of batch) job.reject(error);
      return;
    }
    this.afterBatch(true);
    batch.forEach((job, index) => {
      const outcome = outcomes[index]!;
      if (outcome.ok) job.resolve(outcome.value);
      else job.reject(outcome.value);
    });
  }
}
