// The event-stream benchmarks of OperationService/WatchEvents, each on a fresh server:
//
// - idle:   the server's memory per idle subscriber (VmRSS with N subscribers − before, / N).
//           Goal ≤ 16 KiB.
// - fanout: events/s delivered in all to many subscribers against one subscriber, for the same
//           burst of record operations.
// - watched: durable submits/s while many subscribers watch every event, against none watching.
//           Goal ≥ 0.7.
// - replay: the rate of a replay from sequence 0 (read from the store) against the rate of the
//           same number of events streamed from the server's in-memory window. Goal ≥ 0.5.
//
// See bench/README.md for the design of each.
import { count, fixed, formatTable, kib, ms, percent, type SectionReport } from "./format.js";
import { type Endpoint, rssKiB, sleep, withCpu, withServer } from "./processes.js";
import { createBenchProfile, EVENTS_PER_RECORD, operationsClient, submitRecords, waitForSequence } from "./records.js";
import type { Settings } from "./settings.js";
import { abRatios, ratio } from "./stats.js";
import { announcedMaxConcurrentStreams, ask, startStreamWorker, SubscriberGroup } from "./subscribers.js";

const IDLE_GOAL_KIB = 16;
const REPLAY_GOAL = 0.5;
const WATCHED_GOAL = 0.7;
/** Submits in flight while producing events (one HTTP/2 connection). */
const PRODUCER_CONCURRENCY = 64;
/**
 * Events the memory baseline streams per call: fewer than the EventHub's in-memory window of
 * the newest 4096 events (src/lifecycle/event-hub.ts), so the whole call is served from it.
 */
const WINDOW_EVENTS = 4000;

// ---------------------------------------------------------------------------------------------
// idle

interface RssReading {
  kib: number;
  /** Readings taken while waiting for it to settle, one a second. */
  samples: number[];
}

/**
 * The server's VmRSS once it has settled: at least `settleSeconds`, then until three readings a
 * second apart are within 1 % of each other (at most 30 s more). GC cannot be forced from
 * outside, so this is a stable reading, not a minimal one.
 */
async function settledRss(pid: number, settleSeconds: number): Promise<RssReading> {
  await sleep(settleSeconds * 1000);
  const samples = [rssKiB(pid)];
  for (let waited = 0; waited < 30; waited++) {
    const last = samples.slice(-3);
    if (last.length === 3 && (Math.max(...last) - Math.min(...last)) / Math.max(...last) <= 0.01) break;
    await sleep(1000);
    samples.push(rssKiB(pid));
  }
  return { kib: samples[samples.length - 1]!, samples };
}

export async function idleBenchmark(settings: Settings): Promise<SectionReport> {
  const subscribers = settings.subscribers;
  return withServer("idle subscribers", async (server) => {
    const { head } = await createBenchProfile(operationsClient(server));
    const announced = await announcedMaxConcurrentStreams(server.url);
    process.stderr.write(`[idle] server announces SETTINGS_MAX_CONCURRENT_STREAMS = ${announced ?? "none"}; measuring RSS before…\n`);
    const before = await settledRss(server.pid, settings.settleSeconds);
    const group = await SubscriberGroup.connect(server, subscribers, settings.streamWorkers, settings.streamsPerConnection);
    try {
      process.stderr.write(`[idle] ${group.connections} connections open; measuring RSS…\n`);
      const connected = await settledRss(server.pid, settings.settleSeconds);
      const opening = performance.now();
      // From head − 1: each stream gets event `head` at once, which proves the server holds it.
      await group.open(head - 1n);
      const openSeconds = (performance.now() - opening) / 1000;
      process.stderr.write(`[idle] ${subscribers} subscribers open in ${openSeconds.toFixed(1)} s; measuring RSS…\n`);
      const open = await settledRss(server.pid, settings.settleSeconds);
      // Every stream is still there (one that failed would fail this).
      await group.until(head, 30_000);

      const perSubscriber = (open.kib - before.kib) / subscribers;
      const streamsOnly = (open.kib - connected.kib) / subscribers;
      const perConnection = (connected.kib - before.kib) / group.connections;
      const table = formatTable(
        ["server VmRSS", "KiB", "readings while settling (KiB)"],
        [
          ["before (no bench connections)", count(before.kib), before.samples.join(" ")],
          [`${group.connections} connections, no streams`, count(connected.kib), connected.samples.join(" ")],
          [`${subscribers} idle subscribers`, count(open.kib), open.samples.join(" ")],
        ],
        new Set([0, 2]),
      );
      return {
        name: "idle",
        lines: [
          `Idle OperationService/WatchEvents subscribers: ${subscribers} over ${group.connections} HTTP/2 connections ` +
            `(${settings.streamsPerConnection} streams a connection) from ${Math.min(subscribers, settings.streamWorkers)} processes; ` +
            `server announces max concurrent streams ${announced ?? "none"}; opened in ${openSeconds.toFixed(1)} s.`,
          "",
          table,
          "",
          `memory per idle subscriber: ${kib(perSubscriber)} KiB (goal ≤ ${IDLE_GOAL_KIB} KiB)`,
          `  of which its stream: ${kib(streamsOnly)} KiB; its share of the connections: ${kib(perSubscriber - streamsOnly)} KiB (${kib(perConnection)} KiB a connection)`,
        ],
        data: {
          subscribers,
          connections: group.connections,
          streamsPerConnection: settings.streamsPerConnection,
          announcedMaxConcurrentStreams: announced ?? null,
          openSeconds,
          rssKiB: { before, connected, open },
          perSubscriberKiB: perSubscriber,
          perSubscriberStreamOnlyKiB: streamsOnly,
          perConnectionKiB: perConnection,
          goal: { kib: IDLE_GOAL_KIB, met: perSubscriber <= IDLE_GOAL_KIB },
          table,
        },
      };
    } finally {
      await group.stop();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// fanout and watched: A/B runs with two numbers of subscribers

/**
 * `settings.rounds` rounds of one run with each number of subscribers in `sides` (the order
 * alternating between rounds), each with new subscriber processes (none for 0) whose streams
 * are open from the head's event; `run` produces the events after `head` and says where the
 * head is now and what to print.
 */
async function alternatingRuns(
  server: Endpoint,
  settings: Settings,
  label: string,
  sides: readonly [number, number],
  start: bigint,
  run: (subscribers: number, group: SubscriberGroup | undefined, head: bigint) => Promise<{ head: bigint; summary: string }>,
): Promise<void> {
  let head = start;
  for (let round = 0; round < settings.rounds; round++) {
    for (const subscribers of round % 2 === 0 ? sides : [sides[1], sides[0]]) {
      process.stderr.write(`[${label}] round ${round + 1}/${settings.rounds}: ${subscribers} subscribers… `);
      const group = subscribers === 0 ? undefined : await SubscriberGroup.connect(server, subscribers, settings.streamWorkers, settings.streamsPerConnection);
      try {
        await group?.open(head - 1n);
        const done = await run(subscribers, group, head);
        head = done.head;
        process.stderr.write(`${done.summary}\n`);
      } finally {
        await group?.stop();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// fanout

interface FanoutRun {
  subscribers: number;
  events: number;
  /** From the first submit until every subscriber had the burst's last event. */
  seconds: number;
  /** From the first submit until the last submit was answered. */
  producedSeconds: number;
  /** events × subscribers / seconds. */
  deliveredPerSecond: number;
  serverCpu: number;
  /** The server's largest VmRSS during the run, KiB (sampled every 250 ms). */
  serverPeakRssKiB: number;
  /** Fewest and most events a subscriber received (each should receive every event). */
  minEvents: number;
  maxEvents: number;
  /** Times the server cut a subscriber off as a slow reader (it then resumed). */
  resumed: number;
}

export async function fanoutBenchmark(settings: Settings): Promise<SectionReport> {
  const wide = settings.fanoutSubscribers;
  const operations = settings.fanoutOperations;
  const events = operations * EVENTS_PER_RECORD;
  const runs: FanoutRun[] = [];
  await withServer("fan-out", async (server) => {
    const client = operationsClient(server);
    const created = await createBenchProfile(client);
    const profile = created.profile;
    await alternatingRuns(server, settings, "fanout", [1, wide], created.head, async (subscribers, group, head) => {
      const last = head + BigInt(events);
      let peakRss = rssKiB(server.pid);
      const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB(server.pid))), 250);
      const started = performance.now();
      const { value, cpu } = await withCpu(server.pid, async () => {
        const reached = group!.until(last, 600_000);
        await submitRecords(client, profile, operations, PRODUCER_CONCURRENCY);
        const producedSeconds = (performance.now() - started) / 1000;
        return { ...(await reached), producedSeconds };
      }).finally(() => clearInterval(sampler));
      const seconds = (value.at - started) / 1000;
      const run = {
        subscribers,
        events,
        seconds,
        producedSeconds: value.producedSeconds,
        deliveredPerSecond: (events * subscribers) / seconds,
        serverCpu: cpu,
        serverPeakRssKiB: peakRss,
        minEvents: value.minEvents,
        maxEvents: value.maxEvents,
        resumed: value.resumed,
      };
      runs.push(run);
      return { head: last, summary: `${count(run.deliveredPerSecond)} events/s delivered` };
    });
  });
  // Pooled over the rounds: all events delivered over all the time it took.
  const {
    pooled: value,
    rounds: roundRatios,
    rates: [wideRate, oneRate],
  } = abRatios(
    runs.map((run) => ({ side: run.subscribers, amount: run.events * run.subscribers, seconds: run.seconds })),
    wide,
    1,
  );
  const missed = runs.filter((run) => run.minEvents !== run.events || run.maxEvents !== run.events);
  const table = formatTable(
    [
      "round",
      "subscribers",
      "events",
      "produced s",
      "delivered s",
      "delivered events/s",
      "server cpu",
      "server peak RSS MiB",
      "events per subscriber",
      "cut off & resumed",
    ],
    runs.map((run, index) => [
      String(Math.floor(index / 2) + 1),
      String(run.subscribers),
      count(run.events),
      ms(run.producedSeconds),
      ms(run.seconds),
      count(run.deliveredPerSecond),
      percent(run.serverCpu),
      count(run.serverPeakRssKiB / 1024),
      run.minEvents === run.maxEvents ? String(run.minEvents) : `${run.minEvents}..${run.maxEvents}`,
      String(run.resumed),
    ]),
  );
  return {
    name: "fanout",
    lines: [
      `Fan-out: a burst of ${operations} record operations (${events} events; ${PRODUCER_CONCURRENCY} submits in flight) to 1 and to ${wide} ` +
        `WatchEvents subscribers (${settings.streamsPerConnection} streams a connection); time from the first submit until every ` +
        `subscriber has the last event; delivered events/s = events × subscribers / time.`,
      "",
      table,
      "",
      `fan-out delivered events/s, ${wide} subscribers / 1 subscriber: ${fixed(value)} (rounds: ${roundRatios.map((round) => fixed(round)).join(" ")}; ` +
        `${count(wideRate)} vs ${count(oneRate)} events/s)`,
      ...(missed.length > 0 ? [`WARNING: in ${missed.length} runs a subscriber did not receive exactly the burst's ${events} events`] : []),
      ...(runs.some((run) => run.resumed > 0)
        ? [
            `note: the server cut subscribers off as slow readers (RST_STREAM ENHANCE_YOUR_CALM) ${runs.reduce((sum, run) => sum + run.resumed, 0)} times; they resumed from their last event, and the time includes it.`,
          ]
        : []),
    ],
    data: { operations, events, wide, runs, ratio: value, roundRatios, ratePerSecond: { wide: wideRate, one: oneRate }, table },
  };
}

// ---------------------------------------------------------------------------------------------
// watched

interface WatchedRun {
  subscribers: number;
  submits: number;
  seconds: number;
  submitsPerSecond: number;
  serverCpu: number;
}

export async function watchedBenchmark(settings: Settings): Promise<SectionReport> {
  const wide = settings.fanoutSubscribers;
  const operations = settings.fanoutOperations;
  const runs: WatchedRun[] = [];
  await withServer("submits while watched", async (server) => {
    const client = operationsClient(server);
    const created = await createBenchProfile(client);
    // Unmeasured: a fresh server's first submits run cold (JIT, caches), which would favour
    // whichever side runs second in the first round.
    process.stderr.write(`[watched] warming up: ${operations} submits, unmeasured\n`);
    await submitRecords(client, created.profile, operations, PRODUCER_CONCURRENCY);
    const warm = created.head + BigInt(operations * EVENTS_PER_RECORD);
    await alternatingRuns(server, settings, "watched", [0, wide], warm, async (subscribers, group, head) => {
      const last = head + BigInt(operations * EVENTS_PER_RECORD);
      const reached = group?.until(last, 600_000);
      const started = performance.now();
      const { cpu } = await withCpu(server.pid, () => submitRecords(client, created.profile, operations, PRODUCER_CONCURRENCY));
      const seconds = (performance.now() - started) / 1000;
      // Every subscriber got every event (else the run did not measure what it says).
      await reached;
      runs.push({ subscribers, submits: operations, seconds, submitsPerSecond: operations / seconds, serverCpu: cpu });
      return { head: last, summary: `${count(operations / seconds)} submits/s` };
    });
  });
  const {
    pooled: value,
    rounds: roundRatios,
    rates: [watchedRate, unwatchedRate],
  } = abRatios(
    runs.map((run) => ({ side: run.subscribers, amount: run.submits, seconds: run.seconds })),
    wide,
    0,
  );
  const table = formatTable(
    ["round", "subscribers", "submits", "seconds", "submits/s", "server cpu"],
    runs.map((run, index) => [
      String(Math.floor(index / 2) + 1),
      String(run.subscribers),
      count(run.submits),
      ms(run.seconds),
      count(run.submitsPerSecond),
      percent(run.serverCpu),
    ]),
  );
  return {
    name: "watched",
    lines: [
      `Submits while watched: ${operations} durable record submits (${PRODUCER_CONCURRENCY} in flight) with ${wide} WatchEvents subscribers ` +
        `receiving every event (${settings.streamsPerConnection} streams a connection) against none, after ${operations} unmeasured.`,
      "",
      table,
      "",
      `submit throughput, ${wide} subscribers watching / none: ${fixed(value)} (goal ≥ ${WATCHED_GOAL}) (rounds: ${roundRatios.map((round) => fixed(round)).join(" ")}; ` +
        `${count(watchedRate)} vs ${count(unwatchedRate)} submits/s)`,
    ],
    data: { operations, wide, runs, ratio: value, roundRatios, goal: { ratio: WATCHED_GOAL, met: value >= WATCHED_GOAL }, table },
  };
}

// ---------------------------------------------------------------------------------------------
// replay

interface ReplayRun {
  source: "store" | "memory";
  /** Calls (streams) made one after another. */
  calls: number;
  events: number;
  seconds: number;
  eventsPerSecond: number;
  serverCpu: number;
  clientCpu: number;
}

export async function replayBenchmark(settings: Settings): Promise<SectionReport> {
  const operations = Math.ceil(settings.replayEvents / EVENTS_PER_RECORD);
  const runs: ReplayRun[] = [];
  let production = { events: 0, seconds: 0 };
  let perCall = WINDOW_EVENTS;
  await withServer("replay", async (server) => {
    const client = operationsClient(server);
    const { profile, head: start } = await createBenchProfile(client);
    const head = start + BigInt(operations * EVENTS_PER_RECORD);
    process.stderr.write(`[replay] producing ${operations * EVENTS_PER_RECORD} events (${operations} record operations)…\n`);
    const producing = performance.now();
    await submitRecords(client, profile, operations, PRODUCER_CONCURRENCY, (done) => process.stderr.write(`[replay]   ${done}/${operations} submitted\n`));
    await waitForSequence(client, head, 600_000);
    production = { events: operations * EVENTS_PER_RECORD, seconds: (performance.now() - producing) / 1000 };

    const worker = startStreamWorker(server, "replay subscriber");
    try {
      await ask(worker, { op: "connect", connections: 1 }, "connected", 60_000);
      const total = Number(head);
      perCall = Math.min(WINDOW_EVENTS, total);
      // Warm-up, unmeasured: the memory path once (the store path warms up within its first pages).
      await ask(worker, { op: "replay", after: String(head - BigInt(perCall)), until: String(head), repeat: 1 }, "replayed", 600_000);
      for (let round = 0; round < settings.rounds; round++) {
        for (const source of round % 2 === 0 ? (["store", "memory"] as const) : (["memory", "store"] as const)) {
          // The store run streams all `total` events from sequence 0; the memory run streams as many
          // events from the window, `perCall` per call.
          const calls = source === "store" ? 1 : Math.ceil(total / perCall);
          const after = source === "store" ? 0n : head - BigInt(perCall);
          process.stderr.write(`[replay] round ${round + 1}/${settings.rounds}: ${source}… `);
          const { value: answer, cpu } = await withCpu(server.pid, () =>
            ask(worker, { op: "replay", after: String(after), until: String(head), repeat: calls }, "replayed", 600_000),
          );
          const events = answer.runs.reduce((sum, run) => sum + run.events, 0);
          const seconds = answer.runs.reduce((sum, run) => sum + run.ms, 0) / 1000;
          runs.push({ source, calls, events, seconds, eventsPerSecond: events / seconds, serverCpu: cpu, clientCpu: answer.cpu });
          process.stderr.write(`${count(events / seconds)} events/s\n`);
        }
      }
    } finally {
      await worker.stop();
    }
  });
  const rate = (source: ReplayRun["source"]): number => {
    const of = runs.filter((run) => run.source === source);
    return of.reduce((sum, run) => sum + run.events, 0) / of.reduce((sum, run) => sum + run.seconds, 0);
  };
  const value = ratio(rate("store"), rate("memory"));
  const roundRatios = Array.from({ length: settings.rounds }, (_, round) => {
    const pair = runs.slice(round * 2, round * 2 + 2);
    return ratio(pair.find((run) => run.source === "store")!.eventsPerSecond, pair.find((run) => run.source === "memory")!.eventsPerSecond);
  });
  const table = formatTable(
    ["round", "source", "calls", "events", "seconds", "events/s", "server cpu", "client cpu"],
    runs.map((run, index) => [
      String(Math.floor(index / 2) + 1),
      run.source === "store" ? "replay from 0 (store)" : `window (memory), ${perCall}/call`,
      String(run.calls),
      count(run.events),
      ms(run.seconds),
      count(run.eventsPerSecond),
      percent(run.serverCpu),
      percent(run.clientCpu),
    ]),
    new Set([1]),
  );
  return {
    name: "replay",
    lines: [
      `Replay: one WatchEvents stream from sequence 0 through ${count(production.events)} record events (read from SQLite), against the same ` +
        `number of events streamed from the server's in-memory window (the newest ${perCall}, one call after another). ` +
        `Events produced beforehand at ${count(production.events / production.seconds)} events/s (${ms(production.seconds)} s).`,
      "",
      table,
      "",
      `replay/memory rate: ${fixed(value)} (goal ≥ ${REPLAY_GOAL}) (rounds: ${roundRatios.map((round) => fixed(round)).join(" ")}; ` +
        `${count(rate("store"))} vs ${count(rate("memory"))} events/s)`,
      ...(perCall < WINDOW_EVENTS
        ? [`note: all ${perCall} events fit in the in-memory window, so the replay did not read the store; use BENCH_REPLAY_EVENTS > 4096`]
        : []),
    ],
    data: { production, windowEventsPerCall: perCall, runs, ratio: value, roundRatios, goal: { ratio: REPLAY_GOAL, met: value >= REPLAY_GOAL }, table },
  };
}
