// WatchEvents checked the way etcd's robustness suite checks every watcher: a model-based test
// (fast-check commands) interleaves submits, cancels, new watchers (filtered or not, from 0 or
// from a random retained sequence), disconnects and resumes, against one in-process server;
// then every watcher's record must be ordered, unique, gap-free (unfiltered), identical to what
// every other watcher and the store saw for the same sequence, exactly its filter's share, with
// bookmarks that never go backwards. Plus the replay→live seam under a burst, and retention.
//
// AMCTL_STREAMS_RUNS / AMCTL_STREAMS_SEED and AMCTL_SEAM_SEED replay or lengthen a run.
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationEventSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { StopCauseSchema, StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import {
  OperationService,
  type SubmitOperationRequestSchema,
  WatchOperationRequestSchema,
  WatchOperationResponseSchema,
} from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { EventType, OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { SQLITE_FILE } from "../../src/store/sqlite/sqlite-store.js";
import { contiguityViolations, storeTruth, watcherViolations, type SeenBy } from "../helpers/event-invariants.js";
import { EventWatcher, type EventFilterInit, type OperationClient } from "../helpers/event-watcher.js";
import { quiescent } from "../helpers/operations.js";
import { closeSession, decodeEnvelopes, envelope, GRPC_REQUEST_HEADERS, grpcStatus, h2Request, openSession } from "../helpers/raw-http2.js";
import { startTestServer, tempDir, type TestServer } from "../helpers/server.js";
import { seededRandom } from "../helpers/store-file.js";
import { authInterceptors } from "../helpers/tokens.js";
import { eventsWithEveryField, operation, SCOPE } from "../store/conformance.js";

const PROFILES = ["profiles/es-a", "profiles/es-b"] as const;
const BOOKMARK_MS = 200;
const serverConfig: Partial<ServerConfig> = {
  bookmarkIntervalMs: BOOKMARK_MS,
  maxConcurrentExecutions: 8,
  execution: { ...defaultConfig.execution, killGraceMs: 500 },
};

let requestCounter = 0;
function nextRequestId(prefix: string): string {
  requestCounter += 1;
  return `${prefix}-${process.pid}-${requestCounter}`;
}

type SubmitKind = "record" | "true" | "exit3" | "progress" | "long";
const ARGV: Record<Exclude<SubmitKind, "record">, string[]> = {
  true: ["true"],
  exit3: ["sh", "-c", "exit 3"],
  // A progress report on fd 3 (see local-process.ts): a PROGRESS event between start and end.
  progress: ["sh", "-c", `echo '{"percent": 50, "message": "half"}' >&3`],
  long: ["sleep", "30"],
};

function submitRequest(kind: SubmitKind, profile: string, lane: string): MessageInitShape<typeof SubmitOperationRequestSchema> {
  const base = { requestId: nextRequestId(kind), profile, labels: { lane } };
  if (kind === "record") return { ...base, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } };
  const retryPolicy = { maxAttempts: 2, initialBackoff: durationFromMs(10), maxBackoff: durationFromMs(50) };
  return { ...base, spec: { kind: { case: "executionStart", value: { argv: ARGV[kind], retryPolicy } } } };
}

function clientFor(url: string): OperationClient {
  return createClient(OperationService, createGrpcTransport({ baseUrl: url, interceptors: authInterceptors(url) }));
}

/** Watchers use every protocol the server speaks: the invariants must not depend on it. */
const PROTOCOLS = ["grpc", "connect", "grpc-web", "connect-http1"] as const;
type Protocol = (typeof PROTOCOLS)[number];

function watchClients(url: string): Record<Protocol, OperationClient> {
  return {
    grpc: clientFor(url),
    connect: createClient(OperationService, createConnectTransport({ baseUrl: url, httpVersion: "2", interceptors: authInterceptors(url) })),
    "grpc-web": createClient(OperationService, createGrpcWebTransport({ baseUrl: url, httpVersion: "2", interceptors: authInterceptors(url) })),
    "connect-http1": createClient(OperationService, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: authInterceptors(url) })),
  };
}

async function createProfiles(client: OperationClient): Promise<void> {
  for (const profile of PROFILES) {
    const { operation } = await client.submitOperation({
      requestId: nextRequestId("profile"),
      spec: { kind: { case: "profileCreate", value: { profileId: profile.replace("profiles/", ""), profileType: ProfileType.PERSONAL } } },
    });
    for await (const _ of client.watchOperation({ name: operation!.name }, { timeoutMs: 10_000 })) void _;
  }
}

/**
 * Brings every watcher to the end: reconnects the disconnected ones from where they stopped,
 * waits until each has considered `latest`, lingers a bookmark interval (a late duplicate or a
 * bookmark shows now), then disconnects all and returns every invariant they broke.
 */
async function settleAndCheck(
  server: TestServer,
  watchers: EventWatcher[],
  seenBy: SeenBy,
  reference?: EventWatcher,
): Promise<{ violations: string[]; latest: bigint; events: number }> {
  const { latest } = await server.store.eventBounds();
  for (const watcher of watchers) if (!watcher.active) watcher.resume();
  await Promise.all(watchers.map((watcher) => watcher.caughtUp(latest, 15_000)));
  await sleep(BOOKMARK_MS + 150);
  await Promise.all(watchers.map((watcher) => watcher.disconnect()));
  const truth = await storeTruth(server.store);
  if ((await server.store.eventBounds()).latest !== latest) throw new Error("events were appended while checking: not quiescent");
  const violations = [
    ...contiguityViolations([...truth.keys()], 1n),
    ...watchers.flatMap((watcher) => watcherViolations(watcher, truth, latest, seenBy, reference)),
  ];
  return { violations, latest, events: watchers.reduce((sum, watcher) => sum + watcher.events.length, 0) };
}

const FILTERS: (EventFilterInit | undefined)[] = [
  undefined,
  undefined,
  { types: [EventType.COMPLETE, EventType.FAILURE, EventType.CANCEL] },
  { states: [TaskState.RUNNING] },
  { operationTypes: [OperationType.EXECUTION_START] },
  { profile: PROFILES[1] },
  { labels: { lane: "x" } },
  { types: [EventType.START, EventType.RETRY, EventType.PROGRESS], profile: PROFILES[0] },
];

function describeFilter(filter: EventFilterInit | undefined): string {
  if (filter === undefined) return "all";
  return JSON.stringify(filter, (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value));
}

// ---- the model-based test ----------------------------------------------------------------

interface Model {
  active: number;
  disconnected: number;
  long: number;
}

interface Real {
  run: number;
  watchers: EventWatcher[];
  long: string[];
}

let server: TestServer;
let client: OperationClient;
let watchClientsByProtocol: Record<Protocol, OperationClient>;

class Submit implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly kind: Exclude<SubmitKind, "long">,
    readonly count: number,
    readonly profile: 0 | 1,
    readonly lane: "x" | "y",
  ) {}
  check(): boolean {
    return true;
  }
  async run(): Promise<void> {
    // `count` at once: concurrent submits share group commits.
    const responses = await Promise.all(
      Array.from({ length: this.count }, () => client.submitOperation(submitRequest(this.kind, PROFILES[this.profile], this.lane))),
    );
    for (const response of responses) expect(response.created).toBe(true);
  }
  toString(): string {
    return `submit(${this.kind} x${this.count}, ${PROFILES[this.profile]}, lane ${this.lane})`;
  }
}

class StartLong implements fc.AsyncCommand<Model, Real> {
  constructor(readonly profile: 0 | 1) {}
  check(model: Readonly<Model>): boolean {
    return model.long < 3;
  }
  async run(model: Model, real: Real): Promise<void> {
    const { operation } = await client.submitOperation(submitRequest("long", PROFILES[this.profile], "y"));
    real.long.push(operation!.name);
    model.long += 1;
  }
  toString(): string {
    return `startLong(${PROFILES[this.profile]})`;
  }
}

class CancelLong implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check(model: Readonly<Model>): boolean {
    return model.long > 0;
  }
  async run(model: Model, real: Real): Promise<void> {
    const [name] = real.long.splice(this.pick % real.long.length, 1);
    const { operation } = await client.cancelOperation({ name: name!, reason: "model says so" });
    expect([TaskState.CANCELLED, TaskState.RUNNING, TaskState.QUEUED]).toContain(operation!.state);
    model.long -= 1;
  }
  toString(): string {
    return `cancelLong(${this.pick})`;
  }
}

class Subscribe implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly filter: number,
    readonly from: "zero" | "random" | "latest",
    readonly fraction: number,
    readonly protocol: Protocol,
  ) {}
  check(model: Readonly<Model>): boolean {
    return model.active + model.disconnected < 10;
  }
  async run(model: Model, real: Real): Promise<void> {
    const { oldest, latest } = await server.store.eventBounds();
    const lowest = oldest - 1n;
    const after = this.from === "zero" ? 0n : this.from === "latest" ? latest : lowest + BigInt(Math.floor(this.fraction * Number(latest - lowest)));
    const filter = FILTERS[this.filter];
    const name = `run ${real.run} watcher ${real.watchers.length} (${describeFilter(filter)}, from ${after}, ${this.protocol})`;
    const watcher = new EventWatcher(watchClientsByProtocol[this.protocol], name, filter);
    watcher.connect(after);
    real.watchers.push(watcher);
    model.active += 1;
  }
  toString(): string {
    return `subscribe(${describeFilter(FILTERS[this.filter])}, ${this.from}${this.from === "random" ? ` ${this.fraction.toFixed(3)}` : ""}, ${this.protocol})`;
  }
}

class Disconnect implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check(model: Readonly<Model>): boolean {
    return model.active > 0;
  }
  async run(model: Model, real: Real): Promise<void> {
    const active = real.watchers.filter((watcher) => watcher.active);
    await active[this.pick % active.length]!.disconnect();
    model.active -= 1;
    model.disconnected += 1;
  }
  toString(): string {
    return `disconnect(${this.pick})`;
  }
}

class Resume implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check(model: Readonly<Model>): boolean {
    return model.disconnected > 0;
  }
  async run(model: Model, real: Real): Promise<void> {
    const disconnected = real.watchers.filter((watcher) => !watcher.active);
    disconnected[this.pick % disconnected.length]!.resume();
    model.active += 1;
    model.disconnected -= 1;
  }
  toString(): string {
    return `resume(${this.pick})`;
  }
}

class Pause implements fc.AsyncCommand<Model, Real> {
  constructor(readonly ms: number) {}
  check(): boolean {
    return true;
  }
  async run(): Promise<void> {
    await sleep(this.ms);
  }
  toString(): string {
    return `pause(${this.ms})`;
  }
}

const submitArbitrary = fc
  .record({
    kind: fc.constantFrom("record" as const, "true" as const, "exit3" as const, "progress" as const),
    count: fc.integer({ min: 1, max: 4 }),
    profile: fc.constantFrom(0 as const, 1 as const),
    lane: fc.constantFrom("x" as const, "y" as const),
  })
  .map(({ kind, count, profile, lane }) => new Submit(kind, count, profile, lane));
const subscribeArbitrary = fc
  .record({
    filter: fc.nat({ max: FILTERS.length - 1 }),
    from: fc.constantFrom("zero" as const, "random" as const, "latest" as const),
    permille: fc.integer({ min: 0, max: 1000 }),
    protocol: fc.constantFrom(...PROTOCOLS),
  })
  .map(({ filter, from, permille, protocol }) => new Subscribe(filter, from, permille / 1000, protocol));
// fc.commands picks uniformly among these: submits and subscriptions are listed twice.
const commandArbitraries = [
  submitArbitrary,
  submitArbitrary,
  subscribeArbitrary,
  subscribeArbitrary,
  fc.constantFrom(0 as const, 1 as const).map((profile) => new StartLong(profile)),
  fc.nat().map((pick) => new CancelLong(pick)),
  fc.nat().map((pick) => new Disconnect(pick)),
  fc.nat().map((pick) => new Resume(pick)),
  fc.integer({ min: 0, max: 80 }).map((ms) => new Pause(ms)),
];

describe("WatchEvents invariants", () => {
  beforeAll(async () => {
    server = await startTestServer(serverConfig);
    client = clientFor(server.url);
    watchClientsByProtocol = watchClients(server.url);
    await createProfiles(client);
  });
  afterAll(() => server?.close());

  it("model-based: ordered, unique, gap-free, never split, resumable, filters exact, bookmarks monotonic", { timeout: 85_000 }, async () => {
    const seenBy: SeenBy = new Map();
    let runs = 0;
    let checkedEvents = 0;
    let watchersChecked = 0;
    await fc.assert(
      fc.asyncProperty(fc.commands(commandArbitraries, { size: "medium", maxCommands: 40 }), async (commands) => {
        runs += 1;
        // Every run has one unfiltered watcher from 0 from the start: the reference list.
        const reference = new EventWatcher(client, `run ${runs} reference (all, from 0)`);
        reference.connect(0n);
        const real: Real = { run: runs, watchers: [reference], long: [] };
        try {
          await fc.asyncModelRun(() => ({ model: { active: 1, disconnected: 0, long: 0 }, real }), commands);
          for (const name of real.long.splice(0)) await client.cancelOperation({ name, reason: "end of run" });
          await quiescent(client);
          const { violations, events } = await settleAndCheck(server, real.watchers, seenBy, reference);
          checkedEvents += events;
          watchersChecked += real.watchers.length;
          expect(violations, violations.join("\n")).toEqual([]);
        } finally {
          await Promise.all(real.watchers.map((watcher) => watcher.disconnect()));
          for (const name of real.long) await client.cancelOperation({ name, reason: "cleanup" }).catch(() => undefined);
        }
      }),
      {
        numRuns: Number(process.env.AMCTL_STREAMS_RUNS ?? 25),
        endOnFailure: true,
        ...(process.env.AMCTL_STREAMS_SEED ? { seed: Number(process.env.AMCTL_STREAMS_SEED) } : {}),
      },
    );
    const { latest } = await server.store.eventBounds();
    console.log(
      `event-streams: ${runs} runs, ${watchersChecked} watchers, ${checkedEvents} received events checked, ${seenBy.size} distinct sequences cross-checked, latest #${latest}`,
    );
  });
});

describe("replay → live seam", () => {
  it("watchers that join during a burst, from 0 or a random sequence, get every later event exactly once, in order", { timeout: 60_000 }, async () => {
    const seed = Number(process.env.AMCTL_SEAM_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const random = seededRandom(seed);
    const dataDir = tempDir("amctl-seam-");
    // History in the file first, then a restart: the new server's in-memory window starts
    // empty, so a replay reads the store and must hand over to the live window mid-burst.
    const first = await startTestServer({ ...serverConfig, dataDir });
    const firstClient = clientFor(first.url);
    await createProfiles(firstClient);
    let index = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (index++ < 120) await firstClient.submitOperation(submitRequest("record", PROFILES[0], "x"));
      }),
    );
    await quiescent(firstClient);
    await first.close();

    const seam = await startTestServer({ ...serverConfig, dataDir });
    const seamClient = clientFor(seam.url);
    try {
      let stop = false;
      const kinds: Exclude<SubmitKind, "long">[] = ["record", "record", "record", "true", "progress"];
      const burst = Promise.all(
        Array.from({ length: 6 }, async (_, worker) => {
          for (let n = 0; !stop; n += 1) {
            await seamClient.submitOperation(submitRequest(kinds[(worker + n) % kinds.length]!, PROFILES[(worker + n) % 2]!, "x"));
          }
        }),
      );
      const watchers: EventWatcher[] = [];
      await Promise.all(
        Array.from({ length: 16 }, async (_, k) => {
          await sleep(Math.floor(random() * 2500));
          const { latest } = await seam.store.eventBounds();
          const roll = random();
          const after = roll < 0.3 ? 0n : roll < 0.45 ? latest : BigInt(Math.floor(random() * Number(latest)));
          // One in three filtered: a filter must not open a seam either.
          const filter = k % 3 === 2 ? FILTERS[2 + (k % (FILTERS.length - 2))] : undefined;
          const watcher = new EventWatcher(seamClient, `seam watcher ${k} (${describeFilter(filter)}, from ${after} of ${latest})`, filter);
          watcher.connect(after);
          watchers.push(watcher);
        }),
      );
      await sleep(500);
      stop = true;
      await burst;
      await quiescent(seamClient);
      const { violations, latest, events } = await settleAndCheck(seam, watchers, new Map());
      expect(violations, `seed ${seed}\n${violations.join("\n")}`).toEqual([]);
      console.log(`seam: ${watchers.length} watchers joined mid-burst (seed ${seed}), ${events} received events checked, latest #${latest}`);
    } finally {
      await seam.close();
    }
  });
});

describe("rows stored before events had type and state columns", () => {
  it("a replay selects them as maybe in the query and sends exactly the ones its filter matches", { timeout: 60_000 }, async () => {
    const dataDir = tempDir("amctl-legacy-events-");
    const first = await startTestServer({ ...serverConfig, dataDir });
    const firstClient = clientFor(first.url);
    await createProfiles(firstClient);
    for (let n = 0; n < 12; n += 1) await firstClient.submitOperation(submitRequest(n % 3 === 0 ? "progress" : "record", PROFILES[n % 2]!, "x"));
    await quiescent(firstClient);
    await first.close();
    // Every other row as a version before SQLite migration 10 left it: no event_type, no state.
    const db = new Database(join(dataDir, SQLITE_FILE));
    const legacyRows = db.prepare("UPDATE events SET event_type = NULL, state = NULL WHERE sequence % 2 = 0").run().changes;
    db.close();
    expect(legacyRows).toBeGreaterThan(10);

    // After a restart the in-memory window is empty: a replay from 0 reads the store's pages.
    const server = await startTestServer({ ...serverConfig, dataDir });
    try {
      const { latest } = await server.store.eventBounds();
      const types = [EventType.COMPLETE, EventType.FAILURE, EventType.CANCEL];
      const page = await server.store.readEventPage({ types, after: 0n, through: latest, limit: 10_000 });
      // The query keeps the legacy rows of other types (the test would prove nothing otherwise)…
      expect(page.events.filter((stored) => !types.includes(stored.event.type)).length).toBeGreaterThan(0);
      // …and the streams send exactly the events their filters match, by type and by state.
      const client = clientFor(server.url);
      const watchers = [{ types }, { states: [TaskState.RUNNING] }].map(
        (filter) => new EventWatcher(client, `legacy rows (${describeFilter(filter)})`, filter),
      );
      for (const watcher of watchers) watcher.connect(0n);
      const { violations, events } = await settleAndCheck(server, watchers, new Map());
      expect(violations).toEqual([]);
      expect(events).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
  });
});

describe("retention", () => {
  it("a cursor older than retention is OutOfRange naming the oldest retained sequence; from oldest-1 it works", { timeout: 30_000 }, async () => {
    const retained = await startTestServer({ ...serverConfig, eventRetention: { maxEvents: 10, maxAgeMs: 3_600_000 }, compactionIntervalMs: 100 });
    const retainedClient = clientFor(retained.url);
    try {
      await createProfiles(retainedClient);
      for (let n = 0; n < 15; n += 1) await retainedClient.submitOperation(submitRequest("record", PROFILES[0], "x"));
      await quiescent(retainedClient);
      const { latest } = await retained.store.eventBounds();
      expect(latest).toBeGreaterThan(30n);
      // Compaction keeps the newest 10.
      const deadline = Date.now() + 5_000;
      while ((await retained.store.eventBounds()).oldest !== latest - 9n) {
        if (Date.now() > deadline)
          throw new Error(`no compaction: ${JSON.stringify(await retained.store.eventBounds(), (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
        await sleep(50);
      }
      const oldest = latest - 9n;

      for (const after of [1n, oldest - 2n]) {
        const error = await (async () => {
          for await (const _ of retainedClient.watchEvents({ afterSequence: after }, { timeoutMs: 5_000 })) return new Error(`from ${after}: got a message`);
          return new Error(`from ${after}: the stream ended`);
        })().catch((e: unknown) => ConnectError.from(e));
        expect(error).toBeInstanceOf(ConnectError);
        const refusal = error as ConnectError;
        expect(refusal.code).toBe(Code.OutOfRange);
        expect(refusal.rawMessage).toContain(`oldest available is ${oldest}`);
        const [info] = refusal.findDetails(ErrorInfoSchema);
        expect(info?.reason).toBe("EVENTS_COMPACTED");
        expect(info?.metadata).toMatchObject({ oldest_sequence: String(oldest), after_sequence: String(after) });
      }

      // From oldest-1 (and from 0, "every retained event") the stream starts at the oldest.
      const truth = await storeTruth(retained.store);
      for (const after of [oldest - 1n, 0n]) {
        const watcher = new EventWatcher(retainedClient, `retention watcher from ${after}`);
        watcher.connect(after);
        await watcher.caughtUp(latest, 5_000);
        await watcher.disconnect();
        expect(watcher.errors()).toEqual([]);
        expect(watcher.events.map((event) => event.sequence)).toEqual([...truth.keys()]);
        expect(watcher.events[0]?.sequence).toBe(oldest);
      }

      // A finished operation whose events are all compacted: OutOfRange, not a stream that
      // never ends. And a cursor beyond the newest event is OutOfRange too.
      const [firstOperation] = (await retainedClient.listOperations({ pageSize: 1000 })).operations.slice(-1);
      expect(firstOperation!.lastSequence).toBeLessThan(oldest);
      const refusals = await Promise.all([
        (async () => {
          for await (const _ of retainedClient.watchOperation({ name: firstOperation!.name }, { timeoutMs: 5_000 })) return undefined;
          return undefined;
        })().catch((e: unknown) => ConnectError.from(e)),
        (async () => {
          for await (const _ of retainedClient.watchEvents({ afterSequence: latest + 5n }, { timeoutMs: 5_000 })) return undefined;
          return undefined;
        })().catch((e: unknown) => ConnectError.from(e)),
      ]);
      expect(refusals.map((r) => [r?.code, r?.findDetails(ErrorInfoSchema)[0]?.reason])).toEqual([
        [Code.OutOfRange, "EVENTS_COMPACTED"],
        [Code.OutOfRange, "CURSOR_AHEAD"],
      ]);
    } finally {
      await retained.close();
    }
  });
});

describe("a replay of stored rows sent in the bytes they were stored in", () => {
  it("sends each event exactly as protobuf encodes the event the store holds, with every field set, by every protocol", { timeout: 60_000 }, async () => {
    const dataDir = tempDir("amctl-stored-bytes-");
    const first = await startTestServer({ ...serverConfig, dataDir });
    const op = operation({ profile: PROFILES[0] });
    let written: OperationEvent[] = [];
    try {
      await first.store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d" });
      const legacy = create(StopCauseSchema, { message: "the runner stopped" });
      legacy.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: new BinaryWriter().string("runner_lost").finish() }];
      written = [
        ...eventsWithEveryField(op.name),
        // A row of a version before 0.x: its bytes hold the old form, which must not go out.
        create(OperationEventSchema, { operation: op.name, type: EventType.RETRY, attributes: { case: "retry", value: { cause: legacy } } }),
      ];
      written.at(-1)!.state = TaskState.COMPLETED; // WatchOperation ends with it
      for (const full of written) await first.store.updateOperation({ operation: op, expectedState: TaskState.QUEUED, event: full });
    } finally {
      await first.close();
    }

    // After a restart the in-memory window is empty: a replay from 0 reads the store's pages.
    const server = await startTestServer({ ...serverConfig, dataDir });
    const session = await openSession(server.url);
    try {
      // (The restarted server may go on with the queued operation: its own events come after these.)
      const held = (await server.store.readEvents(0n, 100))
        .map((stored) => stored.event)
        .filter((e) => e.operation === op.name)
        .slice(0, written.length);
      expect(held.map((e) => e.sequence)).toEqual(written.map((_, index) => BigInt(index + 1)));
      expect(held.at(-1)?.attributes.value).toMatchObject({ cause: { reason: StopReason.RUNNER_LOST } });
      // The lean gRPC path's frames, byte for byte: each is toBinary of the response with the event set.
      const response = await h2Request(session, {
        path: "/agentmachine.v1.OperationService/WatchOperation",
        headers: { ...GRPC_REQUEST_HEADERS, authorization: `Bearer ${server.token}` },
        body: envelope(toBinary(WatchOperationRequestSchema, create(WatchOperationRequestSchema, { name: op.name }))),
        timeoutMs: 15_000,
      });
      expect(grpcStatus(response)).toBe(0);
      const expected = held.map((e) => Buffer.from(toBinary(WatchOperationResponseSchema, create(WatchOperationResponseSchema, { event: e }))).toString("hex"));
      expect(decodeEnvelopes(response.body).map((frame) => frame.data.toString("hex"))).toEqual(expected);
      // Every protocol and codec decodes the same events.
      for (const [protocol, client] of Object.entries(watchClients(server.url))) {
        const received: unknown[] = [];
        for await (const { event } of client.watchOperation({ name: op.name })) received.push(event);
        expect(received, protocol).toEqual(held);
      }
      const json = createClient(
        OperationService,
        createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: false, interceptors: authInterceptors(server.url) }),
      );
      const fromJson: unknown[] = [];
      for await (const { event } of json.watchOperation({ name: op.name })) fromJson.push(event);
      expect(fromJson).toEqual(held);
    } finally {
      await closeSession(session);
      await server.close();
    }
  });
});
