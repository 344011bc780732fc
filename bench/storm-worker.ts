// The replay storm's client process, started by bench/replay-storm.ts (`node --import tsx
// bench/storm-worker.ts --url URL --replays N --profile profiles/ID --expect K`). It keeps N
// OperationService/WatchEvents streams replaying from sequence 0 with the filter `profile`, over
// CONNECTIONS HTTP/2 connections: each stream runs until it has received the K events of that
// profile (the newest events on the server, so the replay has considered the whole history), is
// cancelled, and is opened again. It prints `{"ready":true}` once every stream has finished one replay, and
// when stdin closes it stops and prints `{"replays":R}`, the replays finished in all.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OperationService } from "../src/gen/agentmachine/v1/operation_service_pb.js";
import { credentialInterceptors, workerToken } from "./credentials.js";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { url: { type: "string" }, replays: { type: "string" }, profile: { type: "string" }, expect: { type: "string" } },
  strict: true,
});
const url = new URL(values.url ?? "");
// The benchmark never leaves this machine.
if (url.protocol !== "http:" || url.hostname !== "127.0.0.1") throw new Error(`--url must be http://127.0.0.1:PORT, got ${values.url}`);
const streams = Number(values.replays);
const expected = Number(values.expect);
const filter = { profile: values.profile ?? "" };

// Spread over connections because each replay ends with a cancel (RST_STREAM): on one connection
// the storm resets streams faster than nghttp2's rapid-reset guard allows (CVE-2023-44487: a
// burst of 1,000, then 33 a second), and the server's HTTP/2 session ends with INTERNAL_ERROR.
const CONNECTIONS = 10;
const clients = Array.from({ length: CONNECTIONS }, () =>
  createClient(OperationService, createGrpcTransport({ baseUrl: url.toString(), interceptors: credentialInterceptors(workerToken()) })),
);
const stopping = new AbortController();
let finished = 0;
let firstRounds = 0;

/** One replay from 0, until it has received the profile's `expected` events; false when stopped first. */
async function replayOnce(client: (typeof clients)[number]): Promise<boolean> {
  const call = new AbortController();
  const stop = () => call.abort();
  stopping.signal.addEventListener("abort", stop, { once: true });
  let events = 0;
  try {
    for await (const response of client.watchEvents({ afterSequence: 0n, filter }, { signal: call.signal })) {
      if (response.kind.case === "event" && ++events === expected) return true;
    }
    throw new Error("the stream ended");
  } catch (error) {
    if (stopping.signal.aborted) return false;
    throw error;
  } finally {
    stopping.signal.removeEventListener("abort", stop);
    call.abort();
  }
}

async function loop(_: unknown, index: number): Promise<void> {
  let first = true;
  while (await replayOnce(clients[index % CONNECTIONS]!)) {
    finished++;
    if (first && ++firstRounds === streams) process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
    first = false;
  }
}

const loops = Promise.all(Array.from({ length: streams }, loop));
createInterface({ input: process.stdin }).on("close", () => {
  stopping.abort();
  void loops.then(() => {
    process.stdout.write(`${JSON.stringify({ replays: finished })}\n`);
    process.exit(0);
  });
});
loops.catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
