// Progress lines: complete lines are delivered whatever the chunking, a line over the cap is
// dropped and counted without ever being held, and a flood without a newline keeps the reader
// within its cap.
import { PassThrough, Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { PROGRESS_LINE_LIMIT_BYTES, readProgressLines } from "../../src/executors/progress-lines.js";

/** Feeds `chunks` through a stream and collects what the reader delivered. */
async function readAll(chunks: (string | Buffer)[], limit?: number) {
  const stream = new PassThrough();
  const lines: string[] = [];
  const reader = readProgressLines(stream, (line) => lines.push(line), limit);
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  await reader.done;
  return { lines, dropped: reader.dropped(), buffered: reader.buffered() };
}

describe("lines", () => {
  it.each([
    ["one chunk", ['{"percent": 10}\n{"percent": 20}\n']],
    ["split inside a line", ['{"perc', 'ent": 10}\n{"percent"', ": 20}\n"]],
    ["split at the newline", ['{"percent": 10}', "\n", '{"percent": 20}', "\n"]],
    ["one byte at a time", [...'{"percent": 10}\n{"percent": 20}\n']],
    ["CRLF line ends", ['{"percent": 10}\r\n{"percent": 20}\r', "\n"]],
  ])("are delivered whole whatever the chunking: %s", async (_, chunks) => {
    expect(await readAll(chunks)).toEqual({ lines: ['{"percent": 10}', '{"percent": 20}'], dropped: 0, buffered: 0 });
  });

  it("keep a UTF-8 character split across chunks whole", async () => {
    const bytes = Buffer.from('{"message": "héllo ✓"}\n', "utf8");
    const at = bytes.indexOf(0xe2) + 1; // inside the three bytes of ✓
    expect((await readAll([bytes.subarray(0, at), bytes.subarray(at)])).lines).toEqual(['{"message": "héllo ✓"}']);
  });

  it("deliver empty lines as empty strings", async () => {
    expect((await readAll(["\n\na\n"])).lines).toEqual(["", "", "a"]);
  });

  it("deliver a last line without a newline when the stream ends", async () => {
    expect(await readAll(['{"percent": 10}\n{"percent": ', "99}"])).toEqual({ lines: ['{"percent": 10}', '{"percent": 99}'], dropped: 0, buffered: 0 });
  });

  it("end with nothing delivered for an empty stream", async () => {
    expect(await readAll([])).toEqual({ lines: [], dropped: 0, buffered: 0 });
  });
});

describe("the cap", () => {
  it("keeps a line of exactly the cap and drops one byte more, counting it", async () => {
    const result = await readAll([`${"a".repeat(8)}\n${"b".repeat(9)}\nc\n`], 8);
    expect(result).toEqual({ lines: ["a".repeat(8), "c"], dropped: 1, buffered: 0 });
  });

  it("drops a long line that arrives across many chunks and resumes at the line after it", async () => {
    const result = await readAll(["ok\nxxxx", "xxxx", "xxxx", "xx\nnext\n"], 8);
    expect(result).toEqual({ lines: ["ok", "next"], dropped: 1, buffered: 0 });
  });

  it("counts every dropped line, one chunk or several", async () => {
    const result = await readAll([`${"x".repeat(20)}\n${"y".repeat(20)}\nz\n`, "w".repeat(30), "\n"], 8);
    expect(result).toEqual({ lines: ["z"], dropped: 3, buffered: 0 });
  });

  it("drops a last line over the cap without a newline, counted", async () => {
    expect(await readAll(["a\n", "b".repeat(9)], 8)).toEqual({ lines: ["a"], dropped: 1, buffered: 0 });
  });

  it("is 64 KiB by default", async () => {
    const kept = "k".repeat(PROGRESS_LINE_LIMIT_BYTES);
    const result = await readAll([`${kept}\n${kept}k\n`]);
    expect(PROGRESS_LINE_LIMIT_BYTES).toBe(64 * 1024);
    expect(result.lines).toEqual([kept]);
    expect(result.dropped).toBe(1);
  });
});

describe("a flood without a newline", () => {
  it("of 100 MiB in chunks is discarded as it arrives: never more than the cap held, one line dropped", async () => {
    const MiB = 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    const chunks = (100 * MiB) / chunk.length;
    let maxBuffered = 0;
    const lines: string[] = [];
    const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    let heapMax = heapBefore;
    let reader: ReturnType<typeof readProgressLines> | undefined;
    const stream = Readable.from(
      (function* () {
        yield Buffer.from('{"percent": 1}\n');
        for (let n = 0; n < chunks; n += 1) {
          yield chunk;
          maxBuffered = Math.max(maxBuffered, reader?.buffered() ?? 0);
          if (n % 160 === 0) {
            const usage = process.memoryUsage();
            heapMax = Math.max(heapMax, usage.heapUsed + usage.arrayBuffers);
          }
        }
        yield Buffer.from('\n{"percent": 2}\n');
      })(),
      { objectMode: false },
    );
    reader = readProgressLines(stream, (line) => lines.push(line));
    await reader.done;

    expect(lines).toEqual(['{"percent": 1}', '{"percent": 2}']);
    expect(lines.every((line) => Buffer.byteLength(line) <= PROGRESS_LINE_LIMIT_BYTES)).toBe(true);
    expect(reader.dropped()).toBe(1);
    expect(maxBuffered).toBeLessThanOrEqual(PROGRESS_LINE_LIMIT_BYTES);
    // Held bytes are bounded by the cap; the process's memory must not grow with the flood
    // (generous slack for the garbage collector's timing: far below the 100 MiB fed).
    expect(heapMax - heapBefore).toBeLessThan(48 * MiB);
  });
});

describe("the stream's end", () => {
  it("comes with an error too, delivering what was complete", async () => {
    const stream = new PassThrough();
    const lines: string[] = [];
    const reader = readProgressLines(stream, (line) => lines.push(line));
    stream.write("a\nb");
    stream.destroy(new Error("EPIPE"));
    await reader.done;
    expect(lines).toEqual(["a", "b"]);
  });
});
