// One subscriber process, started by bench/subscribers.ts (`node --import tsx
// bench/stream-worker.ts --url URL`). It holds OperationService/WatchEvents streams over gRPC
// (the lean client of bench/raw-grpc.ts) and answers commands, one JSON object a line on stdin,
// with one JSON line each on stdout:
//
//   {"op":"connect","connections":C}   opens C HTTP/2 connections → {"op":"connected",...}
//   {"op":"open","subscribers":N,"after":"A"}
//                                      opens N streams from after_sequence A, round-robin over the
//                                      connections, and answers once every one of them has
//                                      received an event (so the server surely holds it; the
//                                      caller makes sure event A+1 exists) → {"op":"opened",...}
//   {"op":"until","sequence":"S"}      answers once every open stream has received event S, with
//                                      how many events each received since the last answer
//                                      → {"op":"reached",...}
//   {"op":"replay","after":"A","until":"S","repeat":K}
//                                      K times one after another: one stream from A, timed until it
//                                      has received event S, then cancelled → {"op":"replayed",...}
//
// A stream the server cuts off as a slow reader (RST_STREAM ENHANCE_YOUR_CALM) resumes from the
// last event it received, as the API asks of clients, and is counted in `resumed`. A stream that
// fails otherwise or ends fails the command waiting on it ({"op":"failed",...}). When stdin
// closes, every stream is cancelled and the process exits.
import type { ClientHttp2Session } from "node:http2";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { workerToken } from "./credentials.js";
import { connect as connectOne, StreamReset, watchEvents, type WatchHandle } from "./raw-grpc.js";

export type StreamCommand =
  | { op: "connect"; connections: number }
  | { op: "open"; subscribers: number; after: string }
  | { op: "until"; sequence: string }
  | { op: "replay"; after: string; until: string; repeat: number };

export type StreamAnswer =
  | { op: "connected"; connections: number; ms: number }
  | { op: "opened"; subscribers: number; ms: number }
  | { op: "reached"; subscribers: number; ms: number; minEvents: number; maxEvents: number; resumed: number }
  | { op: "replayed"; runs: { ms: number; events: number }[]; cpu: number }
  | { op: "failed"; error: string; failedStreams: number };

interface Subscriber {
  /** Sequence of the last event received. */
  last: bigint;
  /** Events received, and at the last `until` answer. */
  events: number;
  eventsAtMark: number;
  /** The goal it last counted towards. */
  goal: number;
  /** Times it was cut off as slow and resumed, in all and at the last `until` answer. */
  resumed: number;
  resumedAtMark: number;
  error?: string;
  handle?: WatchHandle;
}

interface Goal {
  id: number;
  target: bigint;
  pending: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

const { values } = parseArgs({ args: process.argv.slice(2), options: { url: { type: "string" } }, strict: true });
const url = new URL(values.url ?? "");
// The benchmark never leaves this machine.
if (url.protocol !== "http:" || url.hostname !== "127.0.0.1") throw new Error(`--url must be http://127.0.0.1:PORT, got ${values.url}`);

const token = workerToken();
let stopping = false;
const sessions: ClientHttp2Session[] = [];
const subscribers: Subscriber[] = [];
let goal: Goal | undefined;
let goals = 0;

function errorText(error: unknown): string {
  return error instanceof Error ? error.message.slice(0, 200) : String(error);
}

/** Counts `subscriber` towards the current goal once it has what the goal waits for. */
function progress(subscriber: Subscriber): void {
  if (goal === undefined || subscriber.goal === goal.id) return;
  if (subscriber.error !== undefined) {
    goal.reject(new Error(subscriber.error));
    return;
  }
  if (subscriber.last < goal.target) return;
  subscriber.goal = goal.id;
  if (--goal.pending === 0) goal.resolve();
}

/** Resolves once every subscriber in `of` has received event `target`. */
function reach(of: Subscriber[], target: bigint): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    goal = { id: ++goals, target, pending: of.length, resolve, reject };
    if (of.length === 0) resolve();
    for (const subscriber of of) progress(subscriber);
  }).finally(() => (goal = undefined));
}

function follow(session: ClientHttp2Session, subscriber: Subscriber): void {
  subscriber.handle = watchEvents(session, token, subscriber.last, (sequence) => {
    subscriber.events++;
    subscriber.last = sequence;
    progress(subscriber);
  });
  subscriber.handle.done.catch((error: unknown) => {
    if (stopping) return;
    if (error instanceof StreamReset && error.slowSubscriberCutOff) {
      subscriber.resumed++;
      follow(session, subscriber);
      return;
    }
    subscriber.error = errorText(error);
    progress(subscriber);
  });
}

async function connect(connections: number): Promise<void> {
  sessions.push(...(await Promise.all(Array.from({ length: connections }, () => connectOne(url.origin)))));
}

async function open(count: number, after: bigint): Promise<void> {
  if (sessions.length === 0) throw new Error("open before connect");
  const opened: Subscriber[] = [];
  for (let index = 0; index < count; index++) {
    const subscriber: Subscriber = { last: after, events: 0, eventsAtMark: 0, goal: 0, resumed: 0, resumedAtMark: 0 };
    subscribers.push(subscriber);
    opened.push(subscriber);
    follow(sessions[subscribers.length % sessions.length]!, subscriber);
  }
  await reach(opened, after + 1n);
  for (const subscriber of opened) [subscriber.eventsAtMark, subscriber.resumedAtMark] = [subscriber.events, subscriber.resumed];
}

async function until(sequence: bigint): Promise<Extract<StreamAnswer, { op: "reached" }>> {
  await reach(subscribers, sequence);
  let minEvents = Infinity;
  let maxEvents = 0;
  let resumed = 0;
  for (const subscriber of subscribers) {
    const received = subscriber.events - subscriber.eventsAtMark;
    minEvents = Math.min(minEvents, received);
    maxEvents = Math.max(maxEvents, received);
    resumed += subscriber.resumed - subscriber.resumedAtMark;
    [subscriber.eventsAtMark, subscriber.resumedAtMark] = [subscriber.events, subscriber.resumed];
  }
  return { op: "reached", subscribers: subscribers.length, ms: 0, minEvents, maxEvents, resumed };
}

/** One stream from `after`, until it has received event `last`; then it is cancelled. */
function replayOnce(session: ClientHttp2Session, after: bigint, last: bigint): Promise<{ ms: number; events: number }> {
  const began = performance.now();
  let events = 0;
  return new Promise((resolve, reject) => {
    const handle = watchEvents(session, token, after, (sequence) => {
      events++;
      if (sequence < last) return;
      handle.cancel();
      resolve({ ms: performance.now() - began, events });
    });
    handle.done.then(() => reject(new Error(`the replay from ${after} was cancelled before event ${last}`)), reject);
  });
}

async function replay(after: bigint, last: bigint, repeat: number): Promise<StreamAnswer> {
  const session = sessions[0];
  if (session === undefined) throw new Error("replay before connect");
  const runs: { ms: number; events: number }[] = [];
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let run = 0; run < repeat; run++) runs.push(await replayOnce(session, after, last));
  const cpu = process.cpuUsage(cpuBefore);
  return { op: "replayed", runs, cpu: (cpu.user + cpu.system) / 1000 / (performance.now() - started) };
}

async function answer(command: StreamCommand): Promise<StreamAnswer> {
  const began = performance.now();
  const elapsed = (): number => performance.now() - began;
  switch (command.op) {
    case "connect":
      await connect(command.connections);
      return { op: "connected", connections: sessions.length, ms: elapsed() };
    case "open":
      await open(command.subscribers, BigInt(command.after));
      return { op: "opened", subscribers: command.subscribers, ms: elapsed() };
    case "until":
      return { ...(await until(BigInt(command.sequence))), ms: elapsed() };
    case "replay":
      return replay(BigInt(command.after), BigInt(command.until), command.repeat);
  }
}

const write = (message: StreamAnswer): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

// Commands run one at a time, in order.
let queue = Promise.resolve();
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line) as StreamCommand;
  queue = queue.then(() =>
    answer(command).then(write, (error: unknown) =>
      write({ op: "failed", error: errorText(error), failedStreams: subscribers.filter((subscriber) => subscriber.error !== undefined).length }),
    ),
  );
});
lines.on("close", () => {
  stopping = true;
  for (const subscriber of subscribers) subscriber.handle?.cancel();
  // Let the cancellations go out (RST_STREAM), then leave.
  setTimeout(() => process.exit(0), 200);
});
