// Reading an execution's output in tests: a client of OutputService, a program that writes
// numbered lines to stdout (and every tenth also to stderr), and WatchOutput read to its end with
// the chunks checked to follow one another without a gap.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "vitest";
import { OutputStream } from "../../src/gen/agentmachine/v1/output_pb.js";
import { OutputService, type WatchOutputRequestSchema } from "../../src/gen/agentmachine/v1/output_service_pb.js";
import { bearer } from "./auth.js";

export type OutputClient = Client<typeof OutputService>;

export const outputClient = (server: { url: string; token: string }): OutputClient =>
  createClient(OutputService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));

/** A program that prints `line N` to stdout every `ms`, `count` times, and `err N` to stderr every tenth line. */
export function lines(count: number, ms: number): string[] {
  const script = `let i = 0; const t = setInterval(() => { console.log("line " + i); if (i % 10 === 0) console.error("err " + i); if (++i === ${count}) clearInterval(t); }, ${ms});`;
  return [process.execPath, "-e", script];
}

/** Everything a WatchOutput call sends, gathered by stream; the chunks must follow one another without a gap. */
export async function readAll(client: OutputClient, request: MessageInitShape<typeof WatchOutputRequestSchema> & { name: string }) {
  const text = { stdout: "", stderr: "" };
  const next = { stdout: request.stdoutOffset ?? 0n, stderr: request.stderrOffset ?? 0n };
  const ends: { stream: string; offset: bigint; truncated: boolean; attempt: number }[] = [];
  for await (const { kind } of client.watchOutput(request)) {
    if (kind.case === undefined) continue;
    const stream = kind.value.stream === OutputStream.STDERR ? "stderr" : "stdout";
    expect(kind.value.offset).toBe(next[stream]);
    if (kind.case === "end") {
      ends.push({ stream, offset: kind.value.offset, truncated: kind.value.truncated, attempt: kind.value.attempt });
      continue;
    }
    text[stream] += Buffer.from(kind.value.data).toString("utf8");
    next[stream] += BigInt(kind.value.data.length);
  }
  return { text, ends };
}

/** `line 0`…`line N-1`, each once and in order: what a follower must have printed. */
export function expectEveryLineOnce(printed: string[], count: number): void {
  expect(printed).toEqual(Array.from({ length: count }, (_, i) => `line ${i}`));
}
