// Captures a child's output stream into a file in its workspace, keeping at most `limit` bytes
// so a chatty program cannot fill the disk; shared by the executors that run programs.
import { createWriteStream } from "node:fs";
import type { Readable } from "node:stream";

export function captureTo(stream: Readable, path: string, limit: number): { bytes: () => number; truncated: () => boolean; done: Promise<void> } {
  const file = createWriteStream(path);
  let bytes = 0;
  let truncated = false;
  stream.on("data", (chunk: Buffer) => {
    const room = limit - bytes;
    if (room <= 0) {
      truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    truncated ||= kept.length < chunk.length;
    bytes += kept.length;
    file.write(kept);
  });
  const done = new Promise<void>((resolveDone) => stream.on("close", () => file.end(resolveDone)));
  return { bytes: () => bytes, truncated: () => truncated, done };
}
