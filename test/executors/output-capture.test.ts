// Output capture: at most the limit is kept, and a symlink planted where the log goes (by an
// earlier attempt of the same program) never makes the server write outside the workspace.
import { lstatSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { expect, it } from "vitest";
import { captureLogPath, captureTo } from "../../src/executors/output-capture.js";

async function capture(path: string, text: string, limit: number) {
  const stream = new PassThrough();
  const captured = captureTo(stream, path, limit);
  stream.end(text);
  await captured.done;
  return captured;
}

it("keeps at most the limit and says it truncated", async () => {
  const path = captureLogPath(mkdtempSync(join(tmpdir(), "capture-")), "stdout", 1);
  const captured = await capture(path, "x".repeat(100), 10);
  expect([captured.bytes(), captured.truncated(), readFileSync(path, "utf8")]).toEqual([10, true, "x".repeat(10)]);
});

it("replaces a symlink planted at the log's path instead of writing through it", async () => {
  const workspace = mkdtempSync(join(tmpdir(), "capture-"));
  const outside = join(mkdtempSync(join(tmpdir(), "outside-")), "victim");
  writeFileSync(outside, "untouched");
  const path = captureLogPath(workspace, "stderr", 2);
  symlinkSync(outside, path);
  await capture(path, "output", 100);
  expect(readFileSync(outside, "utf8")).toBe("untouched");
  expect(lstatSync(path).isSymbolicLink()).toBe(false);
  expect(readFileSync(path, "utf8")).toBe("output");
});

it("never writes through a symlink planted after the removal: the output is dropped instead", async () => {
  const workspace = mkdtempSync(join(tmpdir(), "capture-"));
  const outside = join(mkdtempSync(join(tmpdir(), "outside-")), "victim");
  writeFileSync(outside, "untouched");
  const path = captureLogPath(workspace, "stdout", 1);
  const stream = new PassThrough();
  const captured = captureTo(stream, path, 100);
  symlinkSync(outside, path); // planted before the asynchronous open runs
  stream.end("output");
  await captured.done;
  expect(readFileSync(outside, "utf8")).toBe("untouched");
  expect(captured.truncated()).toBe(true);
});
