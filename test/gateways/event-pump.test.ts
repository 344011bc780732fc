// The pump between a provider's stream and the model gateway: whatever the chunks (cut anywhere,
// inside a character or inside the usage JSON), it gives back the stream's bytes unchanged as runs
// of whole events; all that one turn of the event loop read is one run; it stops reading far
// enough ahead of a slow gateway; a stream that breaks off is a failure whose unfinished event
// is not given.
import { PassThrough } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventPump } from "../../src/gateways/event-pump.js";
import { eventsWith, textLength, type Framing } from "../../src/gateways/stream-scan.js";

const turn = () => new Promise((resolve) => setImmediate(resolve));

async function drain(pump: EventPump): Promise<Buffer[]> {
  const runs: Buffer[] = [];
  for (let run = await pump.next(); run !== undefined; run = await pump.next()) runs.push(run);
  return runs;
}

/** A complete event ends a run: a blank line (sse) or a newline (ndjson). */
const endsWhole = (run: Buffer, framing: Framing) => (framing === "ndjson" ? run.at(-1) === 0x0a : run.subarray(-2).toString().endsWith("\n\n"));

const sse = (json: object) => `data: ${JSON.stringify(json)}\n\n`;
const textEvent = (content: string) => sse({ id: "c", choices: [{ index: 0, delta: { content } }], usage: null });
const usageEvent = sse({ id: "c", choices: [], usage: { prompt_tokens: 7, completion_tokens: 3 } });

describe("the event pump", () => {
  it("gives back the stream's bytes unchanged, in runs of whole events, wherever its chunks are cut and however they arrive", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: "grapheme" }), { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 16 }),
        fc.array(fc.boolean(), { maxLength: 16 }),
        async (texts, cuts, pauses) => {
          const bytes = Buffer.from(`${texts.map(textEvent).join("")}${usageEvent}data: [DONE]\n\n`);
          const body = new PassThrough();
          const pump = new EventPump(body, "sse");
          const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
          const runs = drain(pump);
          let from = 0;
          for (const [i, point] of [...points, bytes.length].entries()) {
            body.write(bytes.subarray(from, point));
            from = point;
            if (pauses[i] === true) await turn();
          }
          body.end();
          const got = await runs;
          expect(Buffer.concat(got).equals(bytes)).toBe(true);
          for (const run of got) expect(endsWhole(run, "sse")).toBe(true);
          expect(got.reduce((sum, run) => sum + textLength(run, ['"content"']), 0)).toBe(texts.join("").length);
          expect(got.flatMap((run) => eventsWith(run, '"usage"', "sse"))).toEqual([
            { id: "c", choices: [], usage: { prompt_tokens: 7, completion_tokens: 3 } },
          ]);
          expect(pump.failure).toBeUndefined();
        },
      ),
      { numRuns: 300 },
    );
  });

  it("gives all that one turn of the event loop read as one run", async () => {
    const body = new PassThrough();
    const pump = new EventPump(body, "ndjson");
    const lines = Array.from({ length: 500 }, (_, i) => `{"response":"tok ${i}","done":false}\n`);
    for (const line of lines) body.write(line);
    const run = await pump.next();
    expect(run?.toString()).toBe(lines.join(""));
    body.end('{"done":true,"eval_count":500}');
    expect((await pump.next())?.toString()).toBe('{"done":true,"eval_count":500}');
    expect(await pump.next()).toBeUndefined();
  });

  it("stops reading when it is further ahead than it may be, and reads on once the gateway takes what it read", async () => {
    const body = new PassThrough({ highWaterMark: 16 });
    const pump = new EventPump(body, "ndjson", 1024);
    const line = `${"x".repeat(99)}\n`;
    for (let i = 0; i < 50; i += 1) body.write(line);
    await turn();
    await turn();
    expect(body.isPaused()).toBe(true);
    expect(body.readableLength).toBeGreaterThan(0);
    body.end();
    const runs = await drain(pump);
    expect(Buffer.concat(runs).toString()).toBe(line.repeat(50));
    expect(runs.length).toBeGreaterThan(1);
  });

  it("reports a stream that broke off as a failure and leaves its unfinished event out", async () => {
    const body = new PassThrough();
    const pump = new EventPump(body, "sse");
    body.write(`${textEvent("whole")}data: {"choices":[{"delta":{"content":"cut off`);
    const first = await pump.next();
    expect(first?.toString()).toBe(textEvent("whole"));
    body.destroy(new Error("the provider went away"));
    expect(await pump.next()).toBeUndefined();
    expect((pump.failure as Error).message).toBe("the provider went away");
  });

  it("stops reading when cancelled", async () => {
    const body = new PassThrough();
    const pump = new EventPump(body, "sse");
    body.write(textEvent("one"));
    expect((await pump.next())?.toString()).toBe(textEvent("one"));
    await pump.cancel();
    expect(body.destroyed).toBe(true);
  });
});
