// Captures a child's output stream into a file in its workspace, keeping at most `limit` bytes
// so a chatty program cannot fill the disk; shared by the executors that run programs.
import { createWriteStream, rmSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { Attempt } from "./executor.js";
import { OutputForwarder } from "./output-forwarder.js";

/** Where an attempt's stdout or stderr is kept. */
export function captureLogPath(workspace: string, stream: "stdout" | "stderr", attempt: number): string {
  return join(workspace, `${stream}.${attempt}.log`);
}

/**
 * Keeps up to `limit` bytes of `stream` in the file at `path` and, with `forward`, sends the same
 * bytes on as they come; `done` settles once the file is written and the forwarder has the end.
 */
export function captureTo(
  stream: Readable,
  path: string,
  limit: number,
  forward?: OutputForwarder,
): { bytes: () => number; truncated: () => boolean; done: Promise<void> } {
  // The workspace belongs to the program: an earlier attempt could have left a symlink where
  // this log goes, to have the server write through it outside the workspace. Whatever is there
  // goes first.
  rmSync(path, { force: true, recursive: true });
  // Created here or not at all ("wx": O_CREAT|O_EXCL, which also refuses a symlink): the
  // program may be running already and could plant one between the removal and the open. Then
  // the output is read and dropped, as beyond the limit.
  let bytes = 0;
  let truncated = false;
  let unwritable = false;
  const file = createWriteStream(path, { flags: "wx", mode: 0o644 });
  file.on("error", () => {
    unwritable = true;
    truncated = true;
  });
  stream.on("data", (chunk: Buffer) => {
    const room = unwritable ? 0 : limit - bytes;
    if (room <= 0) {
      truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    truncated ||= kept.length < chunk.length;
    bytes += kept.length;
    file.write(kept);
    forward?.push(kept);
  });
  const written = new Promise<void>((resolveDone) => stream.on("close", () => (file.destroyed ? resolveDone() : file.end(resolveDone))));
  const done = written.then(() => forward?.end(truncated));
  return { bytes: () => bytes, truncated: () => truncated, done };
}

/** An attempt's stdout and stderr, each captured to its log file and forwarded to the attempt's output sink, if it has one. */
export function captureAttemptOutput(child: { stdout: Readable | null; stderr: Readable | null }, attempt: Attempt, limit: number) {
  const capture = (stream: "stdout" | "stderr", from: Readable) =>
    captureTo(from, captureLogPath(attempt.workspace, stream, attempt.attempt), limit, attempt.output && new OutputForwarder(attempt.output, stream));
  return { stdout: capture("stdout", child.stdout!), stderr: capture("stderr", child.stderr!) };
}
