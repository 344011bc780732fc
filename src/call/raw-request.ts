// Access to the raw HTTP request of a call, for what connect's handler API cannot do: abort a
// stream whose client stopped reading (its writes never complete, so an error can no longer be
// written after them), and tell where a call came from (src/server/peer-address.ts). The request
// reaches handlers through the call's context values (set by connectNodeAdapter's `contextValues`), which costs nothing per
// call — unlike AsyncLocalStorage, which turns on promise hooks for the whole process.
import * as http2 from "node:http2";
import type * as http from "node:http";
import { createContextKey, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { PlaneMetrics } from "../metrics/plane-metrics.js";

export type RawRequest = http.IncomingMessage | http2.Http2ServerRequest;

const rawRequestKey = createContextKey<RawRequest | undefined>(undefined, { description: "raw request" });

/** For connectNodeAdapter's `contextValues` option. */
export function rawRequestContextValues(req: RawRequest): ContextValues {
  return createContextValues().set(rawRequestKey, req);
}

/** The raw request of a call, if it came through connectNodeAdapter. */
export function rawRequestOf(values: ContextValues): RawRequest | undefined {
  return values.get(rawRequestKey);
}

/** Bytes written by the server that the client has not taken yet (flow control or a full socket). */
function unsentBytes(req: RawRequest): number {
  return "stream" in req && req.stream !== undefined ? req.stream.bufferSize : req.socket.writableLength;
}

/**
 * Cuts the call's stream off as "too slow". On HTTP/2 the stream is reset with
 * ENHANCE_YOUR_CALM, which gRPC and Connect clients report as ResourceExhausted; an HTTP/1.1
 * response has no such signal, so its connection is closed.
 */
function cutOff(req: RawRequest): void {
  if ("stream" in req && req.stream !== undefined) req.stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  else req.socket.destroy();
}

/** What a watch stream tells the metrics: that it is open, and whether it was cut off. */
type SubscriberMetrics = Pick<PlaneMetrics, "subscriberConnected" | "subscriberCutOff">;

/**
 * One watch stream's guard against a client that stopped reading: while the stream waits for
 * its transport to take what was written (watch), it is cut off when about twice `timeoutMs`
 * pass while written bytes sit unread and none of them left for `timeoutMs` — the client
 * stopped reading and its flow-control window is full. A server that is merely busy (nothing
 * unsent, or unsent bytes that are draining) is given more time. The subscriber then resumes
 * from the last sequence it received.
 */
export class StallGuard {
  private readonly req: RawRequest | undefined;
  private readonly method: string;
  private disconnected: (() => void) | undefined;

  constructor(
    context: HandlerContext,
    private readonly timeoutMs: number,
    private readonly metrics?: SubscriberMetrics,
  ) {
    this.req = context.values.get(rawRequestKey);
    this.method = context.method.name;
  }

  /** The stream is open (counted by the metrics until closed). */
  opened(): void {
    this.disconnected = this.metrics?.subscriberConnected(this.method);
  }

  closed(): void {
    this.disconnected?.();
  }

  /**
   * Starts watching what was written so far; returns the function that stops it. `written`
   * counts bytes the stream is given while watched (the event hub's direct writes): bytes that
   * left are what was written less what is unsent, so more written meanwhile is no progress.
   */
  watch(written: () => number = () => 0): () => void {
    const { req } = this;
    let timer: NodeJS.Timeout | undefined;
    // Sampled one period after the watch starts (the transport appends the last item's own
    // bytes right after it is yielded), then compared a period later.
    let leftBefore: number | undefined;
    const check = (): void => {
      const unsent = req === undefined ? 0 : unsentBytes(req);
      const left = written() - unsent;
      // Unsent bytes of which none left over a period mean the transport could not write any of them.
      if (req !== undefined && leftBefore !== undefined && unsent > 0 && left <= leftBefore) {
        // A stream cut off is closed at once: connect-node may never resume its generator (its
        // write waits for a 'drain' the closed stream never emits), so `finally` would come too late or not at all.
        this.metrics?.subscriberCutOff(this.method);
        this.closed();
        cutOff(req);
        return;
      }
      leftBefore = left;
      timer = setTimeout(check, this.timeoutMs);
    };
    timer = setTimeout(check, this.timeoutMs);
    return () => clearTimeout(timer);
  }
}

/** Passes items through, cutting the stream off when one item is not taken in time (StallGuard). */
export async function* cutOffWhenStalled<T>(items: AsyncIterable<T>, guard: StallGuard): AsyncGenerator<T> {
  guard.opened();
  try {
    for await (const item of items) {
      const stop = guard.watch();
      try {
        yield item;
      } finally {
        stop();
      }
    }
  } finally {
    guard.closed();
  }
}
