// A Prometheus counter whose series are plain numbers, added to where they are counted and
// handed to prom-client only when it is scraped. prom-client's own `inc` checks the label names
// and builds the series' key from its label values on every call, which several counters on the
// path of every RPC would pay each time; a tally is looked up once, kept by whoever counts it,
// and incremented as a field.
import { Counter, type CounterConfiguration, type LabelValues, type Registry } from "prom-client";

/** One series of a TalliedCounter: add to `value` (never subtract). */
export interface Tally {
  value: number;
}

export class TalliedCounter<T extends string> {
  private readonly tallies = new Map<string, { labels: LabelValues<T>; tally: Tally }>();
  private readonly labelNames: readonly T[];

  constructor(config: { name: string; help: string; labelNames?: readonly T[]; registers: Registry[] }) {
    this.labelNames = config.labelNames ?? [];
    const tallies = this.tallies;
    const counter: CounterConfiguration<T> = {
      ...config,
      collect() {
        this.reset();
        for (const { labels, tally } of tallies.values()) this.inc(labels, tally.value);
      },
    };
    new Counter(counter);
  }

  /**
   * The series of `labels` (the same one for the same label values), at 0 until counted; it is
   * exposed from the next scrape on, so a series made ahead starts at 0 as Prometheus's rate() wants.
   */
  tally(labels: LabelValues<T>): Tally {
    const key = this.labelNames.map((name) => labels[name]).join("\u0000");
    let entry = this.tallies.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, tally: { value: 0 } };
      this.tallies.set(key, entry);
    }
    return entry.tally;
  }
}
