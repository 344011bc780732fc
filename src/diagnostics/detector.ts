// What a redaction detector is: something that finds, in a string, the parts that hold a secret.
// The same detectors run twice over a diagnostics bundle: on every string of every file before
// the bundle is packed (the parts they find are replaced), and on the packed bytes (where any
// find fails the export); export-bundle.ts runs the whole pipeline.

/** Which of the contract's four "…Included" flags a detector's finds would make true. */
export type Category = "credentials" | "tokens" | "localSecrets" | "sensitivePrompts";

/** A part of a string: [start, end). */
export interface Span {
  start: number;
  end: number;
}

/**
 * Where a text comes from: one whole string value of a bundle file (with the name of its field,
 * or of the map key it is the value of, when it has one), or raw text (packed bytes, a whole
 * file) in the final scan.
 */
export type Where = { kind: "value"; field?: string } | { kind: "raw" };

export const RAW: Where = { kind: "raw" };

export interface Detector {
  /** A stable id, e.g. `aws-access-key`; named in the manifest and in a failed export's cause. */
  readonly id: string;
  readonly category: Category;
  /**
   * The parts of `text` that hold what the detector looks for. Detectors that judge a value by
   * its field find nothing in raw text. Must never match a redaction placeholder.
   */
  find(text: string, where: Where): Span[];
}

/** What an allowlist-redacted field reads. */
export const REDACTED = "[redacted]";

/** What a part found by a detector reads. */
export function placeholder(detector: Pick<Detector, "id">): string {
  return `[redacted:${detector.id}]`;
}

/** Placeholders, to be ignored by detectors that judge a whole value. */
export const PLACEHOLDER = /\[redacted(?::[a-z0-9-]+)?\]/g;

/** Every match of `pattern` (which must have the g flag), or of its group `group`, as spans. */
export function matchSpans(pattern: RegExp, text: string, group = 0): Span[] {
  const spans: Span[] = [];
  const re = pattern.hasIndices ? pattern : new RegExp(pattern.source, `${pattern.flags}d`);
  for (const match of text.matchAll(re)) {
    const at = match.indices?.[group];
    if (at !== undefined && at[1] > at[0]) spans.push({ start: at[0], end: at[1] });
  }
  return spans;
}

/** A detector of a text shape: every match of `pattern` (or of its `group`) is a find. */
export function patternDetector(id: string, category: Category, pattern: RegExp, group = 0): Detector {
  const re = new RegExp(pattern.source, pattern.flags.includes("d") ? pattern.flags : `${pattern.flags}d`);
  return { id, category, find: (text) => matchSpans(re, text, group) };
}

/** Replaces the spans (overlapping ones merged) with `replacement`. */
export function replaceSpans(text: string, spans: readonly Span[], replacement: string): string {
  if (spans.length === 0) return text;
  const sorted = [...spans].sort((a, b) => a.start - b.start);
  let out = "";
  let at = 0;
  let current: Span | undefined;
  for (const span of sorted) {
    if (current !== undefined && span.start <= current.end) {
      current.end = Math.max(current.end, span.end);
      continue;
    }
    if (current !== undefined) {
      out += text.slice(at, current.start) + replacement;
      at = current.end;
    }
    current = { ...span };
  }
  out += text.slice(at, current!.start) + replacement + text.slice(current!.end);
  return out;
}
