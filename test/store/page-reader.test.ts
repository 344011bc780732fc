// The SQLite store reads replays' history pages on a thread of its own (src/store/sqlite/page-reader.ts):
// the event loop turns while a page is read, a thread that cannot read fails the page instead of
// leaving the replay waiting forever, and a closed store reads no more pages.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { EventPageReader } from "../../src/store/sqlite/page-reader.js";
import { SQLITE_FILE, SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import { repoRoot, tempDir } from "../helpers/temp-dir.js";
import { SCOPE, event, operation } from "./conformance.js";

let store: SqliteStore | undefined;

afterEach(async () => {
  await store?.close();
  store = undefined;
});

async function storeWithEvents(count: number, dir = tempDir("amctl-pages-")): Promise<SqliteStore> {
  const opened = new SqliteStore(dir);
  const op = operation();
  await opened.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
  await Promise.all(
    Array.from({ length: count }, () =>
      opened.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: event(op.name, EventType.PROGRESS, TaskState.QUEUED) }),
    ),
  );
  return opened;
}

it("reads a page while the event loop goes on turning", async () => {
  store = await storeWithEvents(300);
  const { latest } = await store.eventBounds();
  let reading = true;
  let turns = 0;
  const turn = () => {
    turns += 1;
    if (reading) setImmediate(turn);
  };
  const page = store.readEventPage({ after: 0n, through: latest, limit: 1000 });
  setImmediate(turn);
  const { events } = await page.finally(() => {
    reading = false;
  });
  expect(events.map((stored) => stored.event.sequence)).toEqual(Array.from({ length: 300 }, (_, index) => BigInt(index + 1)));
  // A store that read on the event loop would have had the page before the loop turned once.
  expect(turns).toBeGreaterThan(0);
});

it("keeps a process alive while it reads a page, and not after", async () => {
  const dir = tempDir("amctl-pages-");
  await (await storeWithEvents(5, dir)).close();
  // Nothing but the page being read keeps the child's loop alive: it must print the page, then exit.
  const child = spawnSync(process.execPath, ["--import", "tsx", join(repoRoot, "test/fixtures/read-one-page.ts"), dir], {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: 30_000,
  });
  expect({ status: child.status, signal: child.signal, stdout: child.stdout }).toEqual({ status: 0, signal: null, stdout: "events 5\n" });
});

it("fails a page, and the next one, when its thread cannot open the file", async () => {
  const reader = new EventPageReader({
    file: join(tempDir("amctl-pages-"), "missing.sqlite"),
    statementsKept: 1,
  });
  try {
    await expect(reader.read("SELECT 1", [])).rejects.toThrow(/missing\.sqlite|unable to open|does not exist/);
    await expect(reader.read("SELECT 1", [])).rejects.toThrow();
  } finally {
    await reader.close();
  }
});

it("fails a page whose statement cannot run, and reads the next", async () => {
  const dir = tempDir("amctl-pages-");
  store = await storeWithEvents(3, dir);
  const reader = new EventPageReader({
    file: join(dir, SQLITE_FILE),
    statementsKept: 1,
  });
  try {
    await expect(reader.read("SELECT * FROM no_such_table", [])).rejects.toThrow(/no such table/);
    const page = await reader.read("SELECT sequence, profile, operation_type, labels, data, data_form FROM events WHERE sequence > ?", [1n]);
    expect(page.events.map((stored) => stored.event.sequence)).toEqual([2n, 3n]);
    expect(page.oldest).toBe(1n);
  } finally {
    await reader.close();
  }
  await expect(reader.read("SELECT 1", [])).rejects.toThrow(/closed/);
});

it("reads no page once the store is closed", async () => {
  const closed = await storeWithEvents(2);
  await closed.close();
  await expect(closed.readEventPage({ after: 0n, through: 2n, limit: 10 })).rejects.toThrow(/closed/);
});
