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
  server = await startTestServer({ slowSubscriberTimeoutMs: 300 });
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
