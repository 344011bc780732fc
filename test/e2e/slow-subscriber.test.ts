// A subscriber that stops reading is cut off (ResourceExhausted) after a bounded wait, and
// never stalls the writer or the other subscribers; it can resume from its last sequence.
import * as http2 from "node:http2";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createProfile, operationsClient, requestId, type OperationsClient } from "../helpers/operations.js";
import { stalledWatch } from "../helpers/raw-http2.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
let client: OperationsClient;
let profile: string;

beforeAll(async () => {
  // No bookmark comes during a test: only events (and the cut-off) are written.
  server = await startTestServer({ slowSubscriberTimeoutMs: 300, bookmarkIntervalMs: 600_000 });
  client = operationsClient(server.url);
  profile = await createProfile(client, "slow");
});
afterAll(() => server.close());

it("a WatchEvents client that stops reading is reset with ENHANCE_YOUR_CALM (ResourceExhausted) while writers and other watchers go on", async () => {
  // A client with a 1 KiB flow-control window that never reads: the server's writes block.
  const { session, reset } = stalledWatch(server.url, server.token);

  // A healthy watcher, counting.
  const abort = new AbortController();
  let healthySeen = 0n;
  const healthy = (async () => {
    for await (const { kind } of client.watchEvents({}, { signal: abort.signal })) if (kind.case === "event") healthySeen = kind.value.sequence;
  })().catch(() => undefined);

  // The writer keeps going: 150 submits, none of them held up by the stalled client.
  const submitted = await Promise.all(
    Array.from({ length: 150 }, () =>
      client.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } }),
    ),
  );
  expect(submitted.every((s) => s.created)).toBe(true);

  expect(await reset).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  const { latest } = await server.store.eventBounds();
  await expect.poll(() => healthySeen, { timeout: 10_000 }).toBe(latest);
  abort.abort();
  await healthy;
  session.close();
});

it("a WatchEvents client that stops reading is cut off once what it left unread fills its stream's buffer, though nothing more is written", async () => {
  // From the newest event: it follows live, the event hub writing to its stream (src/call/frame-sink.ts).
  const before = (await server.store.eventBounds()).latest;
  const { session, reset } = stalledWatch(server.url, server.token, before);
  await new Promise((resolve) => setTimeout(resolve, 200));
  // A few dozen events: more than the stream's 16 KiB buffer holds beyond the client's window, then nothing.
  for (let round = 0; round < 4; round += 1) {
    await Promise.all(
      Array.from({ length: 15 }, () =>
        client.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } }),
      ),
    );
  }
  const { latest } = await server.store.eventBounds();
  expect(latest - before).toBeGreaterThan(60n);
  expect(await reset).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  session.close();
});
