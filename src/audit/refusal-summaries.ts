// Refusals of callers that were not authenticated, summed, so that a flood of them costs the
// audit log a few records rather than one each: a bad credential costs nothing to send, and
// every record is kept, hash-chained, until it is pruned. In each interval the first refusal of
// each source address and reason is recorded at once, on its own, like any denial (so that an
// isolated failure is seen as it happens, with its RPC and request digest); the next ones are
// counted, and when the interval ends one summary record states how many there were and from
// when to when (AuditRecord.repeat_count, time, last_time). So a source costs at most two
// records per reason per interval, whatever it sends.
//
// Memory is bounded: at most `maxSources` sources are tracked per interval, and
// REASONS_PER_SOURCE reasons for each. Refusals beyond are counted in overflow summaries (one
// per source for its other reasons, one for all other sources), which record no first refusal
// at once. A summary states what the refusals it counts have in common: a field on which they
// differ (the RPC, the request digest, the source, the reason) is left empty. `close` writes
// what was counted, so that nothing is lost at shutdown.
import { timestampMs, timestampNow, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../api/logger.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { AuditDraft } from "../model/audit-chain.js";

/** The reasons a server gives for an invalid credential are a handful; this leaves room for all. */
const REASONS_PER_SOURCE = 16;

export interface RefusalSummariesOptions {
  /** Appends a record to the audit log (the store's appendAudit). */
  append(draft: AuditDraft): Promise<unknown>;
  intervalMs: number;
  /** Sources tracked per interval, each with its own records. */
  maxSources: number;
  log: Logger;
}

/** `a` with the fields on which `b` differs left empty. */
function common(a: AuditDraft, b: AuditDraft): AuditDraft {
  const same = <T>(x: T, y: T, empty: T): T => (x === y ? x : empty);
  // The command follows from the RPC (and its request): they are kept or cleared together.
  const sameCall = a.rpc === b.rpc && a.commandRef === b.commandRef && a.operationType === b.operationType;
  return {
    ...a,
    ...(sameCall ? {} : { rpc: "", commandRef: "", operationType: OperationType.UNSPECIFIED }),
    requestDigest: same(a.requestDigest, b.requestDigest, ""),
    sourceAddress: same(a.sourceAddress, b.sourceAddress, ""),
    decision: {
      ...a.decision,
      code: same(a.decision?.code ?? "", b.decision?.code ?? "", ""),
      reason: same(a.decision?.reason ?? "", b.decision?.reason ?? "", ""),
    },
  };
}

/** The refusals counted for one summary record. */
class Tally {
  private draft: AuditDraft | undefined;
  private count = 0;
  private first: Timestamp | undefined;
  private last: Timestamp | undefined;

  add(draft: AuditDraft, at: Timestamp): void {
    this.draft = this.draft === undefined ? draft : common(this.draft, draft);
    this.count += 1;
    this.first ??= at;
    this.last = at;
  }

  /** When the first refusal counted happened, for ordering summaries. */
  get firstMs(): number {
    return this.first === undefined ? 0 : timestampMs(this.first);
  }

  /** The summary record, if anything was counted. */
  summary(): AuditDraft | undefined {
    if (this.draft === undefined) return undefined;
    return { ...this.draft, time: this.first, lastTime: this.last, repeatCount: BigInt(this.count) };
  }
}

interface TrackedSource {
  /** By code and reason; a tally is made when the first refusal is recorded at once. */
  reasons: Map<string, Tally>;
  /** Reasons beyond REASONS_PER_SOURCE. */
  others: Tally;
}

export class RefusalSummaries {
  private readonly timer: NodeJS.Timeout;
  private sources = new Map<string, TrackedSource>();
  /** Sources beyond `maxSources`. */
  private others = new Tally();
  /** Summaries are written one interval at a time, in order. */
  private writing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: RefusalSummariesOptions) {
    this.timer = setInterval(() => void this.flush(), options.intervalMs);
    this.timer.unref();
  }

  /**
   * Records the refusal of a caller that was not authenticated (`draft.sourceAddress` set):
   * appended now if it is the first of its source and reason in this interval, else counted.
   */
  async refused(draft: AuditDraft): Promise<void> {
    // After close (a call that outlived the grace period) nothing would write a summary.
    if (this.closed) return void (await this.options.append(draft));
    const at = timestampNow();
    const source = this.track(draft.sourceAddress ?? "");
    if (source === undefined) return this.others.add(draft, at);
    const reason = `${draft.decision?.code ?? ""}\n${draft.decision?.reason ?? ""}`;
    const tally = source.reasons.get(reason);
    if (tally !== undefined) return tally.add(draft, at);
    if (source.reasons.size >= REASONS_PER_SOURCE) return source.others.add(draft, at);
    source.reasons.set(reason, new Tally());
    await this.options.append({ ...draft, time: at });
  }

  /** The source's state, unless `maxSources` others are tracked already. */
  private track(address: string): TrackedSource | undefined {
    let source = this.sources.get(address);
    if (source === undefined && this.sources.size < this.options.maxSources) {
      source = { reasons: new Map(), others: new Tally() };
      this.sources.set(address, source);
    }
    return source;
  }

  /** Ends the interval: its summaries are appended, oldest first, and counting starts again. */
  private flush(): Promise<void> {
    const tallies = [...this.sources.values()].flatMap((source) => [...source.reasons.values(), source.others]);
    tallies.push(this.others);
    this.sources = new Map();
    this.others = new Tally();
    const summaries = tallies.sort((a, b) => a.firstMs - b.firstMs).flatMap((tally) => tally.summary() ?? []);
    this.writing = this.writing.then(async () => {
      for (const summary of summaries) {
        try {
          await this.options.append(summary);
        } catch (error) {
          this.options.log.error({ err: error, repeatCount: String(summary.repeatCount) }, "could not record a summary of refused calls in the audit log");
        }
      }
    });
    return this.writing;
  }

  /** Stops the interval and writes what was counted (call it after the last call, before the store closes). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.closed = true;
    await this.flush();
  }
}
