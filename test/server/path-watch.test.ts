// watchPaths on a real file system: targets that do not exist yet, editors' rename-over saves,
// directories removed and made again, and names beside the targets that must not count.
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, expect, it } from "vitest";
import { createLogger } from "../../src/api/logger.js";
import { watchPaths, type WatchedPath } from "../../src/server/path-watch.js";
import { tempDir } from "../helpers/temp-dir.js";

const log = createLogger("fatal", new Writable({ write: (_chunk, _encoding, callback) => callback() }));
const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** Watches `paths`, counting the calls. */
function counted(paths: WatchedPath[]): { calls: () => number } {
  let calls = 0;
  const watch = watchPaths(paths, () => (calls += 1), log);
  closers.push(() => watch.close());
  return { calls: () => calls };
}

/** Waits for the count to grow past `than`; then for a quiet while, so that one change counts once. */
async function grown(watch: { calls: () => number }, than: number): Promise<number> {
  await expect.poll(watch.calls, { timeout: 3000 }).toBeGreaterThan(than);
  await sleep(300);
  return watch.calls();
}

it("sees a file appear below directories made after the watch began, and an editor's rename over it", async () => {
  const root = tempDir();
  const file = join(root, "operator", "keys", "operator.pub");
  const watch = counted([{ path: file, kind: "file" }]);
  mkdirSync(join(root, "operator"));
  let calls = await grown(watch, 0);
  mkdirSync(join(root, "operator", "keys"));
  calls = await grown(watch, calls);
  writeFileSync(file, "one");
  calls = await grown(watch, calls);
  writeFileSync(join(root, "operator", "keys", "next.tmp"), "two");
  renameSync(join(root, "operator", "keys", "next.tmp"), file);
  calls = await grown(watch, calls);
  rmSync(join(root, "operator"), { recursive: true });
  calls = await grown(watch, calls);
  mkdirSync(join(root, "operator", "keys"), { recursive: true });
  calls = await grown(watch, calls);
  writeFileSync(file, "three");
  await grown(watch, calls);
});

it("ignores other names beside a file and its missing directories (a store writing in the data dir)", async () => {
  const root = tempDir();
  const watch = counted([{ path: join(root, "operator", "operator.pub"), kind: "file" }]);
  for (let i = 0; i < 20; i += 1) writeFileSync(join(root, "store.sqlite-wal"), `write ${i}`);
  mkdirSync(join(root, "policies"));
  await sleep(500);
  expect(watch.calls()).toBe(0);
  mkdirSync(join(root, "operator"));
  writeFileSync(join(root, "operator", "other.pub"), "not the anchor");
  const calls = await grown(watch, 0);
  writeFileSync(join(root, "operator", "another.pub"), "not the anchor either");
  await sleep(500);
  expect(watch.calls()).toBe(calls);
});

it("sees any file change in a directory, and the directory replaced by another", async () => {
  const root = tempDir();
  const dir = join(root, "policies");
  mkdirSync(dir);
  const watch = counted([{ path: dir, kind: "directory" }]);
  writeFileSync(join(dir, "personal.yaml"), "one");
  let calls = await grown(watch, 0);
  mkdirSync(join(root, "policies.new"));
  rmSync(dir, { recursive: true });
  renameSync(join(root, "policies.new"), dir);
  calls = await grown(watch, calls);
  writeFileSync(join(dir, "personal.yaml"), "two");
  await grown(watch, calls);
});

it("coalesces a burst of changes into one call, and calls no more once closed", async () => {
  const root = tempDir();
  let calls = 0;
  const watch = watchPaths([{ path: root, kind: "directory" }], () => (calls += 1), log);
  for (let i = 0; i < 50; i += 1) writeFileSync(join(root, `file-${i}.yaml`), "x");
  await sleep(500);
  expect(calls).toBe(1);
  watch.close();
  writeFileSync(join(root, "late.yaml"), "x");
  await sleep(500);
  expect(calls).toBe(1);
});
