// The server's recent warn/error lines as a bundle shows them (only those of its profile or of
// none come here: log-profiles.ts). Log lines put what varies in fields and keep their message a
// constant of the code, so the message, level, time, RPC name, status code and error type are
// kept; every other field reads "[redacted]" (error messages and stacks can hold anything). The
// profiles a line concerns, and an operation it names, are kept only if they are the bundle's
// own (its profile, its recent operations): a bundle says nothing of other profiles.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { AllowlistTally } from "./allowlist.js";
import { REDACTED } from "./detector.js";

const KEPT = new Set(["level", "time", "msg", "service", "procedure", "code"]);
const ERROR_FIELDS = new Set(["type", "code"]);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function scalar(value: unknown): value is string | number | boolean {
  return typeof value === "string" || typeof value === "number" || typeof value === "boolean";
}

/** `ownNames`: the bundle's profile and the names of its operations. */
export function projectLogLine(line: string, ownNames: ReadonlySet<string>, tally: AllowlistTally): JsonObject {
  const redact = (): JsonValue => {
    tally.redactedFields += 1;
    return REDACTED;
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return { line: redact() };
  }
  if (!isObject(parsed)) return { line: redact() };
  const err = isObject(parsed.err) ? parsed.err : undefined;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (key === "msg" && err !== undefined && value === err.message)
      out[key] = redact(); // log.error(error) puts the error's message here
    else if (KEPT.has(key) && scalar(value)) out[key] = value;
    else if (key === "operation" && typeof value === "string" && ownNames.has(value)) out[key] = value;
    else if (key === "profiles" && Array.isArray(value) && value.every((item) => typeof item === "string" && ownNames.has(item))) out[key] = value as string[];
    else if (key === "err" && err !== undefined) {
      out[key] = Object.fromEntries(Object.entries(err).map(([field, item]) => [field, ERROR_FIELDS.has(field) && scalar(item) ? item : redact()]));
    } else out[key] = redact();
  }
  return out;
}
