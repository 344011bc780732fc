// A provider's stream read the cheap way, checked against the thorough one for any content and
// wherever its bytes are cut: the runs of whole events give back the stream's bytes unchanged,
// the text length read from the bytes is that of the parsed events' text, and exactly the events
// that carry usage are found (not OpenAI's `"usage":null`, not a text that says "usage").
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventRuns, eventsWith, textLength, type Framing } from "../../src/gateways/stream-scan.js";

interface Event {
  text: string | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
}

const event: fc.Arbitrary<Event> = fc.record({
  text: fc.option(
    fc.oneof(
      fc.string(),
      fc.string({ unit: "grapheme" }),
      fc.string({ unit: "binary" }),
      fc.constantFrom('"usage":{"x":1}', '\\"content\\": "', "usage", "\n\n"),
    ),
    { nil: null },
  ),
  usage: fc.option(fc.record({ prompt_tokens: fc.nat(), completion_tokens: fc.nat() }), { nil: null }),
});

/** An OpenAI chunk (with `"usage":null` as OpenAI sends it) or an Ollama line, framed. */
function framed(e: Event, framing: Framing, crlf: boolean, spaced: boolean): string {
  const json =
    framing === "sse"
      ? JSON.stringify({ id: "c", choices: [{ index: 0, delta: e.text === null ? {} : { content: e.text } }], usage: e.usage }, null, spaced ? 1 : undefined)
      : JSON.stringify({ message: { content: e.text ?? "" }, done: e.usage !== null, ...(e.usage ? { eval_count: e.usage.completion_tokens } : {}) });
  if (framing === "ndjson") return `${json}\n`;
  const nl = crlf ? "\r\n" : "\n";
  return `data: ${json.replaceAll("\n", " ")}${nl}${nl}`;
}

function runsOf(framing: Framing, bytes: Buffer, cuts: number[]): Buffer[] {
  const runs = new EventRuns(framing);
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    const run = runs.push(bytes.subarray(from, point));
    if (run !== undefined) out.push(run);
    from = point;
  }
  const rest = runs.end();
  return rest === undefined ? out : [...out, rest];
}

describe("the stream scan", () => {
  it("gives back the bytes unchanged, the text's length and exactly the usage events, wherever the stream is cut", () => {
    fc.assert(
      fc.property(
        fc.array(event, { maxLength: 8 }),
        fc.constantFrom<Framing>("sse", "ndjson"),
        fc.boolean(),
        fc.boolean(),
        fc.array(fc.nat(), { maxLength: 12 }),
        (events, framing, crlf, spaced, cuts) => {
          const bytes = Buffer.from(events.map((e) => framed(e, framing, crlf, spaced)).join(""));
          const runs = runsOf(framing, bytes, cuts);
          expect(Buffer.concat(runs).equals(bytes)).toBe(true);
          const key = framing === "sse" ? '"usage"' : '"eval_count"';
          expect(runs.reduce((sum, run) => sum + textLength(run, ['"content"']), 0)).toBe(events.reduce((sum, e) => sum + (e.text ?? "").length, 0));
          const found = runs.flatMap((run) => eventsWith(run, key, framing));
          const expected = events.filter((e) => e.usage !== null);
          expect(found).toHaveLength(expected.length);
          if (framing === "sse") expect(found.map((json) => (json as Event).usage)).toEqual(expected.map((e) => e.usage));
          else expect(found.map((json) => (json as { eval_count: number }).eval_count)).toEqual(expected.map((e) => e.usage!.completion_tokens));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("holds back an event until its terminator comes, even one cut inside a character or a blank line", () => {
    const runs = new EventRuns("sse");
    const bytes = Buffer.from('data: {"content":"é"}\r\n\r\n');
    expect(runs.push(bytes.subarray(0, 20))).toBeUndefined();
    expect(runs.push(bytes.subarray(20, 24))).toBeUndefined();
    const run = runs.push(bytes.subarray(24))!;
    expect(run.equals(bytes)).toBe(true);
    expect(textLength(run, ['"content"'])).toBe(1);
    expect(runs.end()).toBeUndefined();
  });

  it("finds a key only with its opening quote, at the very start of a run too", () => {
    expect(textLength(Buffer.from('"content":"ab"'), ['"content"'])).toBe(2);
    expect(textLength(Buffer.from('{"subcontent":"ab","xcontent" : "c","content":"d"}'), ['"content"'])).toBe(1);
    expect(eventsWith(Buffer.from('{"myusage":{"a":1}}\n{"usage":{"b":2}}\n'), '"usage"', "ndjson")).toEqual([{ usage: { b: 2 } }]);
  });

  it("counts escapes and characters outside the BMP as JavaScript does, and skips keys whose value is not a string", () => {
    const text = 'a\n\u00e9\ud83d\ude00"\\\u0001';
    const json = Buffer.from(JSON.stringify({ content: text, other: { content: null }, list: [{ content: ["x"] }] }));
    expect(textLength(json, ['"content"'])).toBe(text.length);
  });
});
