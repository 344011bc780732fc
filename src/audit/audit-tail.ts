// Following the audit log: the records after a sequence, in order, then new ones as they commit,
// each once. Wake-ups come from this server's own appends (the store's onAuditAppend) and from a
// poll of the store, which sees appends by other servers on a shared store.
import type { AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import type { AuditQuery, StoreAudit } from "../store/store.js";
import type { ReplayScheduler } from "../model/replay-scheduler.js";
import { type Waiter, waitForWakeUp, wakeAll } from "../model/wake-up.js";

const PAGE = 512;
/** At most this many sequences per page: bounded work where the filter matches little (the log has no secondary index). */
const PAGE_SPAN = 8192n;
/** How late an append by another server may be seen. */
const POLL_MS = 1000;

/** Counts this server's audit appends, so that a follower knows whether one came since it last read. */
export class AuditAppends {
  private count = 0;
  private readonly waiters = new Set<Waiter>();

  constructor(store: StoreAudit) {
    store.onAuditAppend(() => {
      this.count += 1;
      wakeAll(this.waiters);
    });
  }

  get seen(): number {
    return this.count;
  }

  /** Resolves when an append after `seen` was made, after `ms`, or when `signal` aborts. */
  wait(seen: number, ms: number, signal: AbortSignal): Promise<void> {
    if (this.count !== seen || signal.aborted) return Promise.resolve();
    return waitForWakeUp(this.waiters, ms, signal);
  }
}

/**
 * The records matching `filter` with a sequence after `after`, then new ones, until `signal`
 * aborts. The head is read before each page: every record up to it has committed (appends commit
 * in sequence order), so when a page comes back short, every match up to its end (at most
 * PAGE_SPAN beyond the cursor, at most the head) was in it, and the cursor moves there — records
 * that did not match are not read again. Pages take their turns in `replays`, as the history
 * pages of event streams do (src/lifecycle/history-replay.ts).
 */
export async function* tailAuditRecords(
  store: StoreAudit,
  appends: AuditAppends,
  replays: ReplayScheduler,
  filter: Omit<AuditQuery, "afterSequence" | "throughSequence" | "limit">,
  after: bigint,
  signal: AbortSignal,
): AsyncGenerator<AuditRecord> {
  let cursor = after;
  while (!signal.aborted) {
    const seen = appends.seen;
    const head = (await store.auditHead())?.sequence ?? 0n;
    if (head <= cursor) {
      await appends.wait(seen, POLL_MS, signal);
      continue;
    }
    const from = cursor;
    const through = from + PAGE_SPAN < head ? from + PAGE_SPAN : head;
    const page = await replays.run(() => store.listAuditRecords({ ...filter, afterSequence: from, throughSequence: through, limit: PAGE }), signal);
    if (page === undefined) return;
    for (const record of page) {
      cursor = record.sequence;
      yield record;
    }
    if (page.length < PAGE) cursor = through;
  }
}
