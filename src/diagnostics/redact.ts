// The second line of redaction: every string of every bundle file — values and map keys —
// passes every detector, in order; each part a detector finds is replaced by
// `[redacted:<detector>]` and counted.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { placeholder, replaceSpans, type Detector } from "./detector.js";

/** Detector id → values replaced. */
export type DetectorTally = Map<string, number>;

function redactString(text: string, field: string | undefined, detectors: readonly Detector[], tally: DetectorTally): string {
  let out = text;
  for (const detector of detectors) {
    const spans = detector.find(out, field === undefined ? { kind: "value" } : { kind: "value", field });
    if (spans.length === 0) continue;
    tally.set(detector.id, (tally.get(detector.id) ?? 0) + spans.length);
    out = replaceSpans(out, spans, placeholder(detector));
  }
  return out;
}

/** `value` with every find of `detectors` replaced; `field` is the name the value is found under. */
export function redactJson(value: JsonValue, detectors: readonly Detector[], tally: DetectorTally, field?: string): JsonValue {
  if (typeof value === "string") return redactString(value, field, detectors, tally);
  if (Array.isArray(value)) return value.map((item) => redactJson(item, detectors, tally, field));
  if (typeof value !== "object" || value === null) return value;
  const out: JsonObject = {};
  for (const [key, item] of Object.entries(value)) {
    const redacted = redactString(key, undefined, detectors, tally);
    let name = redacted;
    // Two keys redacted alike stay two keys.
    for (let n = 2; name !== key && Object.hasOwn(out, name); n += 1) name = `${redacted}#${n}`;
    out[name] = redactJson(item, detectors, tally, name === key ? key : undefined);
  }
  return out;
}
