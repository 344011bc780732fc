// Follows a server stream that can resume from a position (WatchEvents' after_sequence): when
// the stream drops (a network blip, a server restart, a slow-subscriber cut-off) it is opened
// again after the last position seen, so nothing is missed and nothing comes twice.
export interface ResumableStream<T> {
  /** Opens the stream after `position`. */
  open(position: bigint, signal: AbortSignal): AsyncIterable<T>;
  /** The position a message brings the stream to, if any (an event's sequence, a bookmark's). */
  positionOf(message: T): bigint | undefined;
  onMessage(message: T): void;
  /** "live", or why it is reconnecting. */
  onStatus(status: string): void;
}

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

/** Runs until `signal` aborts. */
export async function followResumable<T>(stream: ResumableStream<T>, start: bigint, signal: AbortSignal): Promise<void> {
  let position = start;
  let delay = FIRST_DELAY_MS;
  while (!signal.aborted) {
    try {
      stream.onStatus("live");
      for await (const message of stream.open(position, signal)) {
        position = stream.positionOf(message) ?? position;
        delay = FIRST_DELAY_MS;
        stream.onMessage(message);
      }
      if (signal.aborted) return;
      stream.onStatus("reconnecting: the stream ended");
    } catch (error) {
      if (signal.aborted) return;
      stream.onStatus(`reconnecting: ${(error as Error).message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }
}
