// Scrapes a Prometheus endpoint and reads its text format (version 0.0.4) strictly: every line
// must be a HELP or TYPE comment or a sample, every sample of a family with a TYPE, every label
// value quoted and escaped, so a scrape that Prometheus would reject fails the test here.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  /** Metric family name → its TYPE. */
  types: Map<string, string>;
}

const METRIC_NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const COMMENT = new RegExp(`^# (HELP|TYPE) (${METRIC_NAME}) (.*)$`);
const SAMPLE = new RegExp(`^(${METRIC_NAME})(?:\\{(.*)\\})? (\\S+)$`);
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const match = LABEL.exec(text);
    if (match === null) throw new Error(`bad labels in ${JSON.stringify(line)}`);
    if (match[1]! in labels) throw new Error(`label ${match[1]} twice in ${JSON.stringify(line)}`);
    labels[match[1]!] = match[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
    if (match[3] === "" && LABEL.lastIndex < text.length) throw new Error(`bad labels in ${JSON.stringify(line)}`);
  }
  return labels;
}

/** The family a sample belongs to: a histogram's _bucket, _sum and _count are its own. */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return types.get(base) === "histogram" || types.get(base) === "summary" ? base : undefined;
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline");
  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") continue;
    const comment = COMMENT.exec(line);
    if (comment !== null) {
      if (comment[1] === "TYPE") {
        if (!TYPES.has(comment[3]!)) throw new Error(`bad type in ${JSON.stringify(line)}`);
        if (types.has(comment[2]!)) throw new Error(`${comment[2]} typed twice`);
        types.set(comment[2]!, comment[3]!);
      }
      continue;
    }
    const sample = SAMPLE.exec(line);
    if (sample === null || !VALUE.test(sample[3]!)) throw new Error(`not a sample: ${JSON.stringify(line)}`);
    const name = sample[1]!;
    if (familyOf(name, types) === undefined) throw new Error(`${name} has no TYPE before it`);
    samples.push({ name, labels: sample[2] ? parseLabels(sample[2], line) : {}, value: Number(sample[3]!.replace("Inf", "Infinity")) });
  }
  return { samples, types };
}

export async function scrape(url: string): Promise<Exposition> {
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`);
  if (!response.headers.get("content-type")?.startsWith("text/plain; version=0.0.4"))
    throw new Error(`GET ${url}: content type ${response.headers.get("content-type")}`);
  return parseExposition(await response.text());
}

/** The sum of the samples named `name` whose labels include `labels`; 0 when there are none. */
export function total(exposition: Exposition, name: string, labels: Record<string, string> = {}): number {
  return exposition.samples
    .filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
    .reduce((sum, sample) => sum + sample.value, 0);
}
