// The benchmark's arithmetic (bench/stats.ts): percentiles, ratios, throughput, summaries.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compare, cpuPerCallUs, percentile, ratio, sortAscending, split, summarize, throughput } from "../bench/stats.js";

describe("percentile", () => {
  it("interpolates linearly between closest ranks (NumPy's default)", () => {
    const samples = [1, 2, 3, 4];
    expect(percentile(samples, 0)).toBe(1);
    expect(percentile(samples, 100)).toBe(4);
    expect(percentile(samples, 50)).toBe(2.5);
    expect(percentile(samples, 25)).toBeCloseTo(1.75, 12);
    expect(percentile(samples, 99)).toBeCloseTo(3.97, 12);
  });

  it("does not depend on the order of the samples, and sorts numerically", () => {
    // A string sort would put 100 before 20 and 9.
    expect(percentile([100, 9, 20], 50)).toBe(20);
    expect(percentile([100, 9, 20], 0)).toBe(9);
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
  });

  it("leaves the input alone", () => {
    const samples = [3, 1, 2];
    percentile(samples, 50);
    expect(samples).toEqual([3, 1, 2]);
  });

  it("of one sample is that sample; of none is NaN", () => {
    expect(percentile([7], 0)).toBe(7);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it("p99 of 1..100 is 99.01, p50 is 50.5", () => {
    const samples = Array.from({ length: 100 }, (_, index) => index + 1);
    expect(percentile(samples, 50)).toBe(50.5);
    expect(percentile(samples, 99)).toBeCloseTo(99.01, 12);
  });

  it("trusts `sorted` to skip sorting", () => {
    expect(percentile(Float64Array.from([1, 2, 3]), 50, true)).toBe(2);
  });

  it("rejects a percentile outside 0..100", () => {
    expect(() => percentile([1], -1)).toThrow(RangeError);
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], NaN)).toThrow(RangeError);
  });

  it("is monotone in p and stays within min..max", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 200 }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        (samples, p, q) => {
          const [low, high] = p <= q ? [p, q] : [q, p];
          expect(percentile(samples, low)).toBeLessThanOrEqual(percentile(samples, high));
          expect(percentile(samples, low)).toBeGreaterThanOrEqual(Math.min(...samples));
          expect(percentile(samples, high)).toBeLessThanOrEqual(Math.max(...samples));
        },
      ),
    );
  });
});

describe("sortAscending", () => {
  it("returns a numerically sorted copy", () => {
    const samples = [10, 9, 100, 1];
    expect(Array.from(sortAscending(samples))).toEqual([1, 9, 10, 100]);
    expect(samples).toEqual([10, 9, 100, 1]);
  });
});

describe("ratio", () => {
  it("divides subject by baseline", () => {
    expect(ratio(50, 100)).toBe(0.5);
    expect(ratio(300, 100)).toBe(3);
    expect(ratio(0, 100)).toBe(0);
  });

  it("is NaN, not Infinity, when the baseline is 0 or either side is unknown", () => {
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(0, 0)).toBeNaN();
    expect(ratio(NaN, 1)).toBeNaN();
    expect(ratio(1, NaN)).toBeNaN();
    expect(ratio(Infinity, 1)).toBeNaN();
  });
});

describe("throughput", () => {
  it("is calls per second", () => {
    expect(throughput(300, 3)).toBe(100);
    expect(throughput(0, 3)).toBe(0);
    expect(throughput(10, 0)).toBeNaN();
  });
});

describe("summarize and compare", () => {
  it("summarises latencies over a duration", () => {
    const summary = summarize([4, 1, 3, 2], 2);
    expect(summary).toEqual({ calls: 4, rps: 2, p50Ms: 2.5, p90Ms: expect.closeTo(3.7, 12), p99Ms: expect.closeTo(3.97, 12), maxMs: 4, meanMs: 2.5 });
  });

  it("summarises nothing as zero calls and unknown latencies", () => {
    const summary = summarize([], 3);
    expect(summary.calls).toBe(0);
    expect(summary.rps).toBe(0);
    expect(summary.p50Ms).toBeNaN();
    expect(summary.maxMs).toBeNaN();
  });

  it("compares subject to baseline: throughput, p50 and p99 ratios", () => {
    const baseline = summarize([1, 1, 1, 1], 1); // 4 calls/s, 1 ms
    const subject = summarize([2, 2], 1); // 2 calls/s, 2 ms
    expect(compare(subject, baseline)).toEqual({ throughput: 0.5, p50: 2, p99: 2 });
  });

  it("gives unknown ratios against an empty baseline", () => {
    const comparison = compare(summarize([1], 1), summarize([], 1));
    expect(comparison.throughput).toBeNaN();
    expect(comparison.p50).toBeNaN();
  });
});

describe("split", () => {
  it("spreads clients evenly over at most `parts` workers", () => {
    expect(split(64, 2)).toEqual([32, 32]);
    expect(split(5, 2)).toEqual([3, 2]);
    expect(split(1, 4)).toEqual([1]);
    expect(split(16, 1)).toEqual([16]);
  });

  it("always adds up to the total, with no empty part", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 64 }), (total, parts) => {
        const shares = split(total, parts);
        expect(shares.reduce((sum, share) => sum + share, 0)).toBe(total);
        expect(shares.every((share) => share >= 1)).toBe(true);
        expect(Math.max(...shares) - Math.min(...shares)).toBeLessThanOrEqual(1);
      }),
    );
  });

  it("rejects a total that is not a positive integer", () => {
    expect(() => split(0, 2)).toThrow(RangeError);
    expect(() => split(1.5, 2)).toThrow(RangeError);
  });
});

describe("cpuPerCallUs", () => {
  it("is all the rounds' CPU over all their calls, not the mean of each round's", () => {
    // Half a core at 100 calls/s is 5,000 µs a call, at 300 calls/s 1,667: together 1 core-second for 400 calls.
    expect(
      cpuPerCallUs([
        { rps: 100, serverCpu: 0.5 },
        { rps: 300, serverCpu: 0.5 },
      ]),
    ).toBeCloseTo(2500, 9);
  });

  it("is NaN without calls", () => {
    expect(cpuPerCallUs([])).toBeNaN();
    expect(cpuPerCallUs([{ rps: 0, serverCpu: 0.2 }])).toBeNaN();
  });
});
