// Detectors of exact values the server knows to be secret — its own keys, the environment values
// of executions, secret-named variables of its own environment — in every encoding they could
// travel in: as they are, base64, base64url, hex, URL-encoded and JSON-escaped.
import type { Category, Detector, Span } from "./detector.js";

/**
 * Values shorter than this are not searched: they cannot be told from ordinary text (an env
 * value `1` would hit every number). Such values are kept out by the allowlist alone.
 */
export const KNOWN_VALUE_MIN_LENGTH = 8;

/** The forms `value` may take in a bundle. */
export function encodings(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  const forms = [
    value,
    bytes.toString("base64").replace(/=+$/, ""),
    bytes.toString("base64url"),
    bytes.toString("hex"),
    bytes.toString("hex").toUpperCase(),
    encodeURIComponent(value),
    JSON.stringify(value).slice(1, -1),
  ];
  return [...new Set(forms)];
}

/** The values worth searching for: each value, and each long line of a multi-line one (a PEM's base64 lines). */
function searchable(values: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const value of values) {
    if (value.length >= KNOWN_VALUE_MIN_LENGTH) out.add(value);
    if (!value.includes("\n")) continue;
    for (const line of value.split(/\r?\n/)) {
      const trimmed = line.trim();
      if (trimmed.length >= 16 && !trimmed.startsWith("-----")) out.add(trimmed);
    }
  }
  return out;
}

const PREFIX = KNOWN_VALUE_MIN_LENGTH;

/**
 * Finds every occurrence of any of `values` (in any of their encodings). Candidates are indexed
 * by their first characters, so a scan costs one lookup per position however many values there are.
 */
export function knownValuesDetector(id: string, category: Category, values: Iterable<string>): Detector {
  const byPrefix = new Map<string, string[]>();
  for (const value of searchable(values)) {
    for (const form of encodings(value)) {
      const key = form.slice(0, PREFIX);
      const list = byPrefix.get(key) ?? [];
      list.push(form);
      byPrefix.set(key, list);
    }
  }
  for (const list of byPrefix.values()) list.sort((a, b) => b.length - a.length);
  return {
    id,
    category,
    find(text: string): Span[] {
      const spans: Span[] = [];
      if (byPrefix.size === 0) return spans;
      for (let i = 0; i + PREFIX <= text.length; i += 1) {
        const candidates = byPrefix.get(text.slice(i, i + PREFIX));
        if (candidates === undefined) continue;
        const form = candidates.find((candidate) => text.startsWith(candidate, i));
        if (form === undefined) continue;
        spans.push({ start: i, end: i + form.length });
        i += form.length - 1;
      }
      return spans;
    },
  };
}
