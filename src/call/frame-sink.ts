// A watch call's response stream as raw frames, for the lean gRPC path (src/server/lean-watch.ts):
// it puts a FrameSink in the call's context values when the call's messages go out as binary gRPC
// frames, so that a live event's shared frame (encoded-events.ts) can be
// written to the stream without passing through the call's chain of generators.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";

export interface FrameSink {
  /**
   * Writes the frames, in order, as one write; false when it wrote none of them: the stream is
   * closed, or a frame is not what the call sends for its message — over the call's size limit
   * (yielded instead, it is refused as any message is), or big enough to be compressed.
   */
  write(frames: readonly Uint8Array[]): boolean;
  /** Whether a write now is taken at once: the stream is open and holds little unsent. */
  writable(): boolean;
  /** Whether the stream holds more unsent than its buffer should (its last write returned false). */
  backedUp(): boolean;
  /** Resolves when the stream is no longer backed up, or is closed. */
  drained(): Promise<void>;
}

export const frameSinkKey = createContextKey<FrameSink | undefined>(undefined, { description: "frame sink" });

/** The call's FrameSink, if the lean path serves it in binary gRPC. */
export function frameSinkOf(context: HandlerContext): FrameSink | undefined {
  return context.values.get(frameSinkKey);
}

/**
 * A FrameSink counting the frames it writes with `count`: what an interceptor that counts the
 * messages a call sends (src/server/rpc-metrics.ts) puts in the call's context values, since
 * frames written here never pass through the call's response stream. A class, not closures: a
 * watch stream holds it for hours.
 */
export class CountingFrameSink implements FrameSink {
  constructor(
    private readonly sink: FrameSink,
    private readonly count: (frames: number) => void,
  ) {}

  write(frames: readonly Uint8Array[]): boolean {
    const wrote = this.sink.write(frames);
    if (wrote) this.count(frames.length);
    return wrote;
  }

  writable(): boolean {
    return this.sink.writable();
  }

  backedUp(): boolean {
    return this.sink.backedUp();
  }

  drained(): Promise<void> {
    return this.sink.drained();
  }
}
