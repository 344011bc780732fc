// A provider's stream split into whole events however its bytes arrive: each event is
// forwarded unchanged and its JSON read, for SSE and NDJSON alike.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { StreamEvents } from "../../src/gateways/stream-events.js";

const sse = ['data: {"n":1}\n\n', 'event: ping\ndata: {"n":2}\r\n\r\n', ": comment\n\n", "data: [DONE]\n\n"];
const ndjson = ['{"n":1}\n', '{"n":2}\n', '{"n":3,"done":true}\n'];

function split(framing: "sse" | "ndjson", text: string, cuts: number[]) {
  const events = new StreamEvents(framing);
  const bytes = Buffer.from(text);
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const out = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    out.push(...events.push(bytes.subarray(from, point)));
    from = point;
  }
  return [...out, ...events.end()];
}

describe("StreamEvents", () => {
  it("gives the same events, bytes unchanged, wherever the stream is cut", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 12 }), (cuts) => {
        const events = split("sse", sse.join(""), cuts);
        expect(events.map((e) => e.raw)).toEqual(sse);
        expect(events.map((e) => e.json)).toEqual([{ n: 1 }, { n: 2 }, undefined, undefined]);
        const lines = split("ndjson", ndjson.join(""), cuts);
        expect(lines.map((e) => e.raw)).toEqual(ndjson);
        expect(lines.map((e) => e.json)).toEqual([{ n: 1 }, { n: 2 }, { n: 3, done: true }]);
      }),
    );
  });

  it("keeps a multi-byte character cut in two", () => {
    const events = new StreamEvents("ndjson");
    const bytes = Buffer.from('{"t":"é"}\n');
    expect(events.push(bytes.subarray(0, 7))).toEqual([]);
    expect(events.push(bytes.subarray(7))).toEqual([{ raw: '{"t":"é"}\n', json: { t: "é" } }]);
  });

  it("hands over an unterminated last event at the end", () => {
    const events = new StreamEvents("sse");
    expect(events.push(Buffer.from('data: {"n":1}'))).toEqual([]);
    expect(events.end()).toEqual([{ raw: 'data: {"n":1}', json: { n: 1 } }]);
  });
});
