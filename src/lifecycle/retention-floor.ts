// The oldest retained event as this server last read it: at start and after each of its own
// compactions. With it, a subscription whose cursor the hub's window holds is checked against
// retention without reading the store. On a shared store every replica compacts on the same
// schedule, so each learns of the others' compactions within a compaction interval; until then a
// cursor another replica has just compacted may still be served from this server's window —
// events retained a moment ago, in order, never a gap.
import type { RetentionPolicy, StoreEvents } from "../store/store.js";

export class RetentionFloor {
  private constructor(
    private readonly store: Pick<StoreEvents, "compactEvents" | "eventBounds">,
    private oldestRead: bigint,
  ) {}

  static async open(store: Pick<StoreEvents, "compactEvents" | "eventBounds">): Promise<RetentionFloor> {
    return new RetentionFloor(store, (await store.eventBounds()).oldest);
  }

  /** The oldest retained sequence when last read (`latest + 1` then if none was retained). */
  get oldest(): bigint {
    return this.oldestRead;
  }

  /** Compacts the store's events under `policy`, then reads the new oldest; returns how many were deleted. */
  async compact(policy: RetentionPolicy, now: Date): Promise<number> {
    const removed = await this.store.compactEvents(policy, now);
    this.oldestRead = (await this.store.eventBounds()).oldest;
    return removed;
  }
}
