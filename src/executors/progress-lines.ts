// Splits a child's progress stream (fd 3) into lines without ever holding more than a cap of
// it: the stream belongs to the program, and a program that writes hundreds of megabytes
// without a newline must not make the server buffer them (readline would, until V8's string
// limit ends the process with `RangeError: Invalid string length`).
//
// A line is the bytes before a "\n" (a "\r" before it is dropped too), decoded as UTF-8 once
// complete, so a character split across chunks arrives whole. A line longer than the cap is
// dropped: the bytes held so far are released at once, the rest are discarded as they arrive
// until its newline, and the line is counted. A last line without a newline is delivered when
// the stream ends. A stream that errors ends like one that closes.
import type { Readable } from "node:stream";

/** Longest progress line kept, in bytes without its newline. */
export const PROGRESS_LINE_LIMIT_BYTES = 64 * 1024;

const NEWLINE = 0x0a;

export interface ProgressLines {
  /** Lines dropped so far for being longer than the cap. */
  dropped: () => number;
  /** Bytes held of the line not yet complete; never more than the cap. */
  buffered: () => number;
  /** Resolves once the stream has ended (or failed) and its last line was delivered. */
  done: Promise<void>;
}

/**
 * Calls `onLine` for each complete line of `stream` no longer than `limitBytes`. `onLine`
 * must not throw (the stream's data handler would).
 */
export function readProgressLines(stream: Readable, onLine: (line: string) => void, limitBytes = PROGRESS_LINE_LIMIT_BYTES): ProgressLines {
  let held: Buffer[] = [];
  let heldBytes = 0;
  let discarding = false; // inside a line already dropped: skip to its newline
  let dropped = 0;

  const release = (): void => {
    held = [];
    heldBytes = 0;
  };
  const deliver = (last: Buffer): void => {
    let line = held.length === 0 ? last : Buffer.concat([...held, last]);
    release();
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    onLine(line.toString("utf8"));
  };

  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
    let start = 0;
    while (start < bytes.length) {
      const newline = bytes.indexOf(NEWLINE, start);
      const end = newline === -1 ? bytes.length : newline;
      if (!discarding && heldBytes + (end - start) > limitBytes) {
        dropped += 1;
        discarding = true;
        release();
      }
      if (newline === -1) {
        // Copied: a slice would keep the whole chunk alive for a few bytes of it.
        if (!discarding && end > start) {
          held.push(Buffer.from(bytes.subarray(start, end)));
          heldBytes += end - start;
        }
        return;
      }
      if (discarding) discarding = false;
      else deliver(bytes.subarray(start, end));
      start = newline + 1;
    }
  };

  const done = new Promise<void>((resolveDone) => {
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      stream.off("data", onData);
      if (!discarding && heldBytes > 0) deliver(Buffer.alloc(0));
      release();
      resolveDone();
    };
    stream.on("data", onData);
    stream.once("end", end);
    stream.once("close", end);
    stream.on("error", end); // kept: a later error would otherwise be unhandled
  });
  return { dropped: () => dropped, buffered: () => heldBytes, done };
}
