// Pure statistics for the benchmark: percentiles, throughput, ratios. No I/O, no clocks, so
// test/bench-stats.test.ts can pin them down exactly.

/**
 * The p-th percentile (0 ≤ p ≤ 100) of `samples`, by linear interpolation between the closest
 * ranks (the "R-7" / NumPy default definition): rank = p/100 · (n − 1) on the sorted samples.
 * p0 is the minimum, p100 the maximum, p50 of an even count is the mean of the middle two.
 * Returns NaN for no samples. Set `sorted` when `samples` is already ascending, to skip the copy.
 */
export function percentile(samples: ArrayLike<number>, p: number, sorted = false): number {
  if (!Number.isFinite(p) || p < 0 || p > 100) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  const n = samples.length;
  if (n === 0) return NaN;
  const values = sorted ? samples : sortAscending(samples);
  const rank = (p / 100) * (n - 1);
  const lower = Math.floor(rank);
  const upper = Math.ceil(rank);
  const low = values[lower] as number;
  const high = values[upper] as number;
  return low + (high - low) * (rank - lower);
}

/** A sorted copy (numeric order; `Array.prototype.sort` would sort as strings). */
export function sortAscending(samples: ArrayLike<number>): Float64Array {
  return Float64Array.from(samples).sort();
}

/**
 * `numerator / denominator`, or NaN when either is not a finite number or the denominator is
 * 0: a ratio against a baseline that did not run is unknown, not infinite.
 */
export function ratio(numerator: number, denominator: number): number {
  if (!Number.isFinite(numerator) || !Number.isFinite(denominator) || denominator === 0) return NaN;
  return numerator / denominator;
}

/** A run of an A/B benchmark: which side it was, how much it did, in how long. */
export interface SidedRun<Side> {
  side: Side;
  amount: number;
  seconds: number;
}

/**
 * The ratio of `subject`'s rate to `baseline`'s, pooled (all the amount over all the time of a
 * side's runs), and per round: rounds are consecutive pairs of runs, one of each side.
 */
export function abRatios<Side>(runs: readonly SidedRun<Side>[], subject: Side, baseline: Side): { pooled: number; rounds: number[]; rates: [number, number] } {
  const rate = (side: Side): number => {
    const of = runs.filter((run) => run.side === side);
    return of.reduce((sum, run) => sum + run.amount, 0) / of.reduce((sum, run) => sum + run.seconds, 0);
  };
  const rounds = Array.from({ length: Math.floor(runs.length / 2) }, (_, round) => {
    const pair = runs.slice(round * 2, round * 2 + 2);
    const of = (side: Side): number => {
      const run = pair.find((candidate) => candidate.side === side)!;
      return run.amount / run.seconds;
    };
    return ratio(of(subject), of(baseline));
  });
  const rates: [number, number] = [rate(subject), rate(baseline)];
  return { pooled: ratio(...rates), rounds, rates };
}

/**
 * A side's server CPU per call over rounds of equal length, µs: all the rounds' CPU over all
 * their calls (not the mean of each round's, which a slow round would weigh as much as a fast
 * one); NaN without calls. `serverCpu` is a share of one core, `rps` calls per second.
 */
export function cpuPerCallUs(rounds: readonly { rps: number; serverCpu: number }[]): number {
  const calls = rounds.reduce((sum, round) => sum + round.rps, 0);
  return calls > 0 ? (rounds.reduce((sum, round) => sum + round.serverCpu, 0) / calls) * 1e6 : Number.NaN;
}

/** Calls per second; NaN for a non-positive duration. */
export function throughput(calls: number, seconds: number): number {
  return seconds > 0 ? calls / seconds : NaN;
}

export interface LatencySummary {
  /** Successful calls counted. */
  calls: number;
  /** Calls per second over the measured time. */
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/**
 * Summarises measured windows. Each window contributes its successful calls, its latencies and
 * its duration; throughput is total calls over total time (windows that ran in parallel are
 * merged before this, by the caller: their calls add up over one shared duration).
 */
export function summarize(latenciesMs: ArrayLike<number>, seconds: number): LatencySummary {
  const sorted = sortAscending(latenciesMs);
  let sum = 0;
  for (const value of sorted) sum += value;
  const n = sorted.length;
  return {
    calls: n,
    rps: throughput(n, seconds),
    p50Ms: percentile(sorted, 50, true),
    p90Ms: percentile(sorted, 90, true),
    p99Ms: percentile(sorted, 99, true),
    maxMs: n === 0 ? NaN : (sorted[n - 1] as number),
    meanMs: n === 0 ? NaN : sum / n,
  };
}

export interface Comparison {
  /** subject rps / baseline rps: 1 means as fast as the baseline, 0.5 means half its throughput. */
  throughput: number;
  /** subject p50 / baseline p50: above 1 means the subject is slower. */
  p50: number;
  /** subject p99 / baseline p99: above 1 means the subject is slower. */
  p99: number;
}

export function compare(subject: LatencySummary, baseline: LatencySummary): Comparison {
  return {
    throughput: ratio(subject.rps, baseline.rps),
    p50: ratio(subject.p50Ms, baseline.p50Ms),
    p99: ratio(subject.p99Ms, baseline.p99Ms),
  };
}

/** Splits `total` into `parts` near-equal positive integers (larger ones first). */
export function split(total: number, parts: number): number[] {
  if (!Number.isSafeInteger(total) || total < 1) throw new RangeError(`total must be a positive integer, got ${total}`);
  const count = Math.max(1, Math.min(total, Math.floor(parts)));
  const base = Math.floor(total / count);
  const extra = total % count;
  return Array.from({ length: count }, (_, index) => base + (index < extra ? 1 : 0));
}
