// Hands a child what it waits for on a pipe without waiting for the server's event loop.
//
// A child's stdio pipe ended with `stream.end(data)` gets its end of file only when the server's
// event loop next polls, after whatever synchronous work the tick of the spawn goes on to do
// (the attempt's first store writes, a /proc scan). bwrap reads its options to the end, and the
// sandbox's launcher its launch, before anything starts: in a busy server every sandbox
// started 10 to 17 ms late (bench/README.md). Written here with one synchronous write and closed
// at once, the data and the end of file are in the pipe before the spawn's tick goes on.
//
// Node has no public way to write a child's pipe synchronously: this reads the descriptor of the
// stream's handle, and falls back to `end` where there is none or the pipe is full.
import { writeSync } from "node:fs";
import type { Writable } from "node:stream";

export function writeAndClose(pipe: Writable, data: Buffer): void {
  const fd = (pipe as Writable & { _handle?: { fd?: unknown } })._handle?.fd;
  let written = 0;
  if (typeof fd === "number" && fd >= 0) {
    try {
      while (written < data.length) written += writeSync(fd, data, written);
    } catch {
      // full (EAGAIN: the pipe is non-blocking) or gone (EPIPE): the rest goes the usual way
    }
  }
  if (written === data.length) pipe.destroy();
  else pipe.end(data.subarray(written));
}
