// A storm of replays that match nothing cannot stall the server: 100 WatchEvents streams from
// sequence 0, by a caller whose credential sees none of the history's events (but its own
// profile's first two), over more history than the hub's window holds. Health checks made during the storm answer while the replays still
// have pages to read (counted at the store, not timed), and every replay ends caught up without
// an event. On SQLite and on PostgreSQL.
import { setImmediate as nextTurn } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { EventPageQuery } from "../../src/store/store.js";
import { type ScopedCallers, startWithScopedCallers, storesUnderTest } from "../helpers/scoped-callers.js";
import { event, operation, SCOPE } from "../store/conformance.js";

/** The events the hub's window holds (EventHub.open's default). */
const WINDOW = 4096;
/** More events than the window holds, so that a replay from 0 reads the store for the oldest. */
const HISTORY = 5000;
const REPLAYS = 100;
const HEALTH_CHECKS = 5;
/** Small pages: the storm lasts many pages, and the test can tell a health check answered inside it. */
const PAGE_SPAN = 32;

describe.each(storesUnderTest())("replay storm on %s", (_name, storeUrl) => {
  let callers: ScopedCallers;
  beforeAll(async () => {
    callers = await startWithScopedCallers(await storeUrl(), {
      bookmarkIntervalMs: 1,
      replay: { pageEvents: 512, pageSpan: PAGE_SPAN, pagesInFlight: 4 },
    });
    // The history, all in the profile the watching caller cannot see.
    const { store } = callers.server;
    for (let written = 0; written < HISTORY; written += 100) {
      await Promise.all(
        Array.from({ length: 100 }, () => {
          const op = operation({ profile: callers.theirs.profile });
          return store.createOperation({
            idempotencyScope: SCOPE,
            operation: op,
            requestDigest: "d",
            event: event(op.name, EventType.START, TaskState.QUEUED),
          });
        }),
      );
    }
  }, 180_000);
  afterAll(() => callers?.server.close());

  it("answers health checks while 100 replays that match nothing read the history, and each replay ends caught up without an event", {
    timeout: 180_000,
  }, async () => {
    const { store, url } = callers.server;
    const { latest } = await store.eventBounds();
    // The caller's own profile's events (its creation) are all a replay may send.
    const visible = (await store.readEvents(0n, HISTORY * 2)).filter((stored) => stored.profile === callers.mine.profile).length;
    let pages = 0;
    const readEventPage = store.readEventPage.bind(store);
    store.readEventPage = (query: EventPageQuery) => {
      pages += 1;
      return readEventPage(query);
    };

    const replays = Array.from({ length: REPLAYS }, async () => {
      let events = 0;
      for await (const response of callers.mine.clients.operations.watchEvents({ afterSequence: 0n })) {
        if (response.kind.case === "event") events += 1;
        if (response.kind.case === "bookmark" && response.kind.value.sequence >= latest) return events;
      }
      throw new Error("the stream ended");
    });

    while (pages === 0) await nextTurn();
    const health = createClient(Health, createGrpcTransport({ baseUrl: url }));
    const pagesAtHealth: number[] = [];
    for (let check = 0; check < HEALTH_CHECKS; check += 1) {
      expect((await health.check({ service: "" })).status).toBe(Status.SERVING);
      pagesAtHealth.push(pages);
    }

    expect(await Promise.all(replays)).toEqual(Array.from({ length: REPLAYS }, () => visible));
    // Every replay read its history in bounded pages, and every health check answered before the
    // storm had read them all.
    expect(pages).toBeGreaterThanOrEqual(REPLAYS * Math.floor((HISTORY - WINDOW) / PAGE_SPAN));
    for (const at of pagesAtHealth) expect(at).toBeLessThan(pages);
  });
});
