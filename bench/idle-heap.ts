// What the server holds per idle WatchEvents stream, by kind of object: a heap snapshot of a
// fresh server with the bench's connections open and no stream, another with N idle streams
// over them, and the difference aggregated by constructor or function name, divided by N.
// A diagnosis tool, not a benchmark (the bench's `idle` gives the figure):
//
//   node --import tsx bench/idle-heap.ts [streams=2000] [top=40]   (KEEP_SNAPSHOTS=1 keeps the snapshots)
//
// A heap snapshot collects garbage first, so it counts what is live; the VmRSS readings next to
// each snapshot show what the process holds besides (native memory, V8's free pages).
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { rssKiB, sleep, withServer } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import { SubscriberGroup } from "./subscribers.js";

const streams = Number(process.argv[2] ?? 2000);
const top = Number(process.argv[3] ?? 40);
const perConnection = 100;

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] }; node_count: number };
  nodes: number[];
  strings: string[];
}

/** Self size and count by `type name` (names of strings, arrays and code lumped by type). */
function aggregate(file: string): Map<string, { size: number; count: number }> {
  const data = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const fields = data.snapshot.meta.node_fields;
  const types = data.snapshot.meta.node_types[0];
  const stride = fields.length;
  const [typeAt, nameAt, sizeAt] = [fields.indexOf("type"), fields.indexOf("name"), fields.indexOf("self_size")];
  const byKey = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < data.nodes.length; i += stride) {
    const type = types[data.nodes[i + typeAt]!]!;
    const named = type !== "string" && type !== "concatenated string" && type !== "sliced string" && type !== "number" && type !== "bigint";
    const key = named ? `${type} ${data.strings[data.nodes[i + nameAt]!]!.slice(0, 60)}` : type;
    const entry = byKey.get(key) ?? { size: 0, count: 0 };
    entry.size += data.nodes[i + sizeAt]!;
    entry.count += 1;
    byKey.set(key, entry);
  }
  return byKey;
}

/** Writes a heap snapshot of `pid` (started with --heapsnapshot-signal=SIGUSR2) into `dir` and returns its path. */
async function snapshot(pid: number, dir: string): Promise<string> {
  const existing = new Set(readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  for (;;) {
    await sleep(1000);
    const file = readdirSync(dir).find((name) => name.endsWith(".heapsnapshot") && !existing.has(name));
    if (file === undefined) continue;
    // Complete once it ends with the strings table's closing brackets.
    const path = join(dir, file);
    while (!readFileSync(path, "utf8").trimEnd().endsWith("]}")) await sleep(1000);
    return path;
  }
}

process.env.BENCH_SERVER_NODE_FLAGS = `${process.env.BENCH_SERVER_NODE_FLAGS ?? ""} --heapsnapshot-signal=SIGUSR2`;
const cwd = process.cwd();
await withServer("idle heap", async (server) => {
  const { head } = await createBenchProfile(operationsClient(server));
  const group = await SubscriberGroup.connect(server, streams, 2, perConnection);
  try {
    await sleep(2000);
    const rssBefore = rssKiB(server.pid);
    const beforeFile = await snapshot(server.pid, cwd);
    await group.open(head - 1n);
    await sleep(3000);
    const rssAfter = rssKiB(server.pid);
    const afterFile = await snapshot(server.pid, cwd);
    const before = aggregate(beforeFile);
    const after = aggregate(afterFile);
    // KEEP_SNAPSHOTS=1 leaves them (in the working directory) for a closer look, e.g. in DevTools.
    if (process.env.KEEP_SNAPSHOTS !== "1") for (const file of [beforeFile, afterFile]) rmSync(file);
    const rows = [...after].map(([key, { size, count }]) => {
      const was = before.get(key) ?? { size: 0, count: 0 };
      return { key, bytes: (size - was.size) / streams, count: (count - was.count) / streams };
    });
    const total = rows.reduce((sum, row) => sum + row.bytes, 0);
    console.log(`${streams} idle streams over ${Math.ceil(streams / perConnection)} connections`);
    console.log(`live heap per stream (snapshot self sizes): ${(total / 1024).toFixed(1)} KiB`);
    console.log(`VmRSS per stream (read before each snapshot, so with garbage): ${((rssAfter - rssBefore) / streams).toFixed(1)} KiB`);
    console.log("bytes/stream  objects/stream  type name");
    for (const row of rows.sort((a, b) => b.bytes - a.bytes).slice(0, top)) {
      console.log(`${row.bytes.toFixed(0).padStart(12)}  ${row.count.toFixed(2).padStart(14)}  ${row.key}`);
    }
  } finally {
    await group.stop();
  }
});
