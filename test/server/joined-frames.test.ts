import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { joinedFrames } from "../../src/server/joined-frames.js";

describe("joinedFrames", () => {
  const pool = Array.from({ length: 6 }, (_, i) => new Uint8Array([0, 0, 0, 0, 1, i]));

  it("is always the frames' concatenation, in order, whichever subsets of shared frames come one after another", () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.integer({ min: 0, max: pool.length - 1 }), { minLength: 1, maxLength: 8 }), { maxLength: 30 }), (batches) => {
        for (const picks of batches) {
          const frames = picks.map((i) => pool[i]!);
          expect(Buffer.from(joinedFrames(frames))).toEqual(Buffer.concat(frames));
        }
      }),
    );
  });

  it("joins the same frames once for the streams that take them one after another, and a single frame not at all", () => {
    const frames = [pool[0]!, pool[1]!, pool[2]!];
    const first = joinedFrames([...frames]);
    expect(joinedFrames([...frames])).toBe(first);
    expect(joinedFrames([pool[3]!])).toBe(pool[3]);
    // Equal bytes in other frame objects are joined anew, never mistaken for the last ones.
    const copies = frames.map((frame) => Uint8Array.from(frame));
    const again = joinedFrames(copies);
    expect(again).not.toBe(first);
    expect(Buffer.from(again)).toEqual(Buffer.from(first));
  });
});
