// Where an idle WatchEvents stream's server memory is: the JS heap that is live, the JS heap that
// is garbage or free, and what lies outside the JS heap (nghttp2's and Node's native per-stream
// state, socket buffers, malloc). The server runs with the inspector on, and at each reading this
// asks it for process.memoryUsage() as it is, then again after a full GC (HeapProfiler.
// collectGarbage). A diagnosis tool beside the bench's `idle` (which reads VmRSS only):
//
//   node --experimental-websocket --import tsx bench/idle-memory.ts [streams=10000]
import { rssKiB, sleep, withServer } from "./processes.js";
import { createBenchProfile, operationsClient } from "./records.js";
import { SubscriberGroup } from "./subscribers.js";

const streams = Number(process.argv[2] ?? 10_000);
const perConnection = 100;
const INSPECTOR_PORT = 9339;

/** The server's inspector, over its WebSocket (Chrome DevTools Protocol). */
class Inspector {
  private nextId = 1;
  private readonly pending = new Map<number, (result: unknown) => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
      if (message.id !== undefined) this.pending.get(message.id)?.(message.result);
    });
  }

  static async open(port: number): Promise<Inspector> {
    const [target] = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
    const socket = new WebSocket(target!.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve);
      socket.addEventListener("error", reject);
    });
    return new Inspector(socket);
  }

  call(method: string, params: object = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  async memory(): Promise<Record<string, number>> {
    const result = (await this.call("Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true })) as {
      result: { value: string };
    };
    return JSON.parse(result.result.value) as Record<string, number>;
  }

  close(): void {
    this.socket.close();
  }
}

interface Reading {
  /** process.memoryUsage() as found, then after a full GC; bytes. */
  found: Record<string, number>;
  collected: Record<string, number>;
}

async function read(inspector: Inspector): Promise<Reading> {
  const found = await inspector.memory();
  await inspector.call("HeapProfiler.collectGarbage");
  await sleep(2000);
  return { found, collected: await inspector.memory() };
}

process.env.BENCH_SERVER_NODE_FLAGS = `${process.env.BENCH_SERVER_NODE_FLAGS ?? ""} --inspect=127.0.0.1:${INSPECTOR_PORT}`;
await withServer("idle memory", async (server) => {
  const inspector = await Inspector.open(INSPECTOR_PORT);
  const { head } = await createBenchProfile(operationsClient(server));
  const group = await SubscriberGroup.connect(server, streams, 2, perConnection);
  try {
    await sleep(5000);
    const before = await read(inspector);
    await group.open(head - 1n);
    await sleep(10_000);
    const open = await read(inspector);
    await sleep(10_000);
    const later = await read(inspector);
    const perStream = (a: Record<string, number>, b: Record<string, number>, key: string) => ((b[key]! - a[key]!) / streams / 1024).toFixed(1);
    const keys = ["rss", "heapTotal", "heapUsed", "external", "arrayBuffers"];
    console.log(`${streams} idle streams over ${Math.ceil(streams / perConnection)} connections; KiB per stream (open − before)`);
    console.log(`${"".padEnd(34)}${keys.map((key) => key.padStart(13)).join("")}`);
    const row = (label: string, a: Record<string, number>, b: Record<string, number>) =>
      console.log(`${label.padEnd(34)}${keys.map((key) => perStream(a, b, key).padStart(13)).join("")}`);
    row("as found (10 s after opening)", before.collected, open.found);
    row("after a full GC", before.collected, open.collected);
    row("as found 10 s later", before.collected, later.found);
    row("after a full GC", before.collected, later.collected);
    console.log(`VmRSS now: ${rssKiB(server.pid)} KiB`);
  } finally {
    inspector.close();
    await group.stop();
  }
});
