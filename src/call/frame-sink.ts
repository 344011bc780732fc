// A watch call's response stream as raw frames, for the lean gRPC path (src/server/lean-watch.ts):
// it puts a FrameSink in the call's context values when the call's messages go out as
// uncompressed binary gRPC frames, so that a live event's shared frame (encoded-events.ts) can be
// written to the stream without passing through the call's chain of generators.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";

export interface FrameSink {
  /**
   * Writes the frames, in order, as one write; false when it wrote none of them: the stream is
   * closed, or a frame's message is over the call's size limit (yielded instead, it is refused
   * as any message is).
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

/** The call's FrameSink, if the lean path serves it in uncompressed binary gRPC. */
export function frameSinkOf(context: HandlerContext): FrameSink | undefined {
  return context.values.get(frameSinkKey);
}
