// Reads what the model gateway needs from a provider's stream without decoding or parsing every
// event (bench/model-gateway.ts: a full JSON.parse and re-encoding of each event cost half the
// throughput). The bytes are cut only at event boundaries — server-sent events (OpenAI,
// Anthropic) end with a blank line, NDJSON lines (Ollama) with a newline — into runs of whole
// events, forwarded as they came. In a run:
//
//   - the generated text's length (for the token estimate) is read straight from the bytes: the
//     string values of the API's text keys (`"content"`, `"text"`, `"response"`), counted as
//     JavaScript counts a string (UTF-16 units, an escape as the character it stands for);
//   - only the events that carry usage (a non-null value of the API's usage key) are parsed.
//
// A key is found by its quoted name followed by a colon: inside a JSON string every quote is
// escaped, so a completion's text cannot pass for a key.

export type Framing = "sse" | "ndjson";

const NEWLINE = 0x0a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

// Searched for as bytes: Buffer#indexOf encodes a string needle again at every call.
const needles = new Map<string, Buffer>();
const needle = (text: string): Buffer => needles.get(text) ?? needles.set(text, Buffer.from(text)).get(text)!;
const BLANK_LINE = needle("\n\n");
const BLANK_CRLF_LINE = needle("\n\r\n");

/** Where the events of `bytes` end (just past the last terminator), or 0 when none does. */
function wholeEventsEnd(bytes: Buffer, framing: Framing): number {
  if (framing === "ndjson") return bytes.lastIndexOf(NEWLINE) + 1;
  // A blank line: "\n\n", or "\r\n\r\n" (which holds "\n\r\n").
  const lf = bytes.lastIndexOf(BLANK_LINE);
  const crlf = bytes.lastIndexOf(BLANK_CRLF_LINE);
  return Math.max(lf === -1 ? 0 : lf + 2, crlf === -1 ? 0 : crlf + 3);
}

/** Cuts a stream's chunks into runs of whole events, holding back an unfinished event until it ends. */
export class EventRuns {
  private held: Buffer | undefined;

  constructor(private readonly framing: Framing) {}

  /** The whole events `chunk` completes, with those held back before it; undefined when it completes none. */
  push(chunk: Buffer): Buffer | undefined {
    const bytes = this.held === undefined ? chunk : Buffer.concat([this.held, chunk]);
    const end = wholeEventsEnd(bytes, this.framing);
    this.held = end < bytes.length ? bytes.subarray(end) : undefined;
    return end > 0 ? bytes.subarray(0, end) : undefined;
  }

  /** What is left when the stream ends (an event without its terminator). */
  end(): Buffer | undefined {
    const rest = this.held;
    this.held = undefined;
    return rest;
  }
}

const isSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x09 || byte === 0x0d || byte === NEWLINE;

/** Where the value of the key whose quoted name ends before `from` starts, or -1 when no colon follows (it was not a key). */
function valueStart(bytes: Buffer, from: number): number {
  let at = from;
  while (isSpace(bytes[at])) at += 1;
  if (bytes[at] !== COLON) return -1;
  at += 1;
  while (isSpace(bytes[at])) at += 1;
  return at;
}

/** The length, as a JavaScript string's, of the JSON string whose opening quote is at `at`. */
function stringLength(bytes: Buffer, at: number): number {
  let length = 0;
  for (let i = at + 1; i < bytes.length; i += 1) {
    const byte = bytes[i]!;
    if (byte === QUOTE) break;
    if (byte === BACKSLASH) {
      // \uXXXX is one UTF-16 unit (a surrogate pair is written as two), any other escape one character.
      i += bytes[i + 1] === 0x75 ? 5 : 1;
      length += 1;
    } else if ((byte & 0xc0) !== 0x80) {
      // A character's first byte: four-byte characters are two UTF-16 units.
      length += byte >= 0xf0 ? 2 : 1;
    }
  }
  return length;
}

/**
 * Where the next `key` (a quoted name, `"content"`) at or after `from` is, or -1. It is searched
 * for without its opening quote, then checked for one: Buffer#indexOf looks for a needle's first
 * byte before it compares the rest, and in JSON a quote is the commonest byte there is (ten
 * times slower on a provider's stream, bench/model-gateway.ts).
 */
function keyAt(bytes: Buffer, key: string, from: number): number {
  const name = needle(key.slice(1));
  for (let found = bytes.indexOf(name, from + 1); found !== -1; found = bytes.indexOf(name, found + 1)) {
    if (bytes[found - 1] === QUOTE) return found - 1;
  }
  return -1;
}

/** The total length of the string values of `keys` (quoted names, `"content"`) in `bytes`. */
export function textLength(bytes: Buffer, keys: readonly string[]): number {
  let total = 0;
  for (const key of keys) {
    for (let found = keyAt(bytes, key, 0); found !== -1; found = keyAt(bytes, key, found + key.length)) {
      const value = valueStart(bytes, found + key.length);
      if (value !== -1 && bytes[value] === QUOTE) total += stringLength(bytes, value);
    }
  }
  return total;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The JSON of one event's bytes: its `data:` lines joined, for server-sent events. */
function eventJson(raw: string, framing: Framing): unknown {
  if (framing === "ndjson") return parse(raw);
  const data = raw
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  return data === "" ? undefined : parse(data);
}

/** The bounds of the event of a run of whole events that holds the byte at `at`. */
function eventAround(run: Buffer, at: number, framing: Framing): { start: number; end: number } {
  if (framing === "ndjson") {
    const end = run.indexOf(NEWLINE, at);
    return { start: run.lastIndexOf(NEWLINE, at) + 1, end: end === -1 ? run.length : end + 1 };
  }
  const lf = run.lastIndexOf(BLANK_LINE, at);
  const crlf = run.lastIndexOf(BLANK_CRLF_LINE, at);
  const nextLf = run.indexOf(BLANK_LINE, at);
  const nextCrlf = run.indexOf(BLANK_CRLF_LINE, at);
  return {
    start: Math.max(lf === -1 ? 0 : lf + 2, crlf === -1 ? 0 : crlf + 3),
    end: Math.min(nextLf === -1 ? run.length : nextLf + 2, nextCrlf === -1 ? run.length : nextCrlf + 3),
  };
}

/** The JSON of each event of `run` in which `key` (a quoted name, `"usage"`) has a value other than null. */
export function eventsWith(run: Buffer, key: string, framing: Framing): unknown[] {
  const events: unknown[] = [];
  for (let found = keyAt(run, key, 0); found !== -1; found = keyAt(run, key, found + key.length)) {
    const value = valueStart(run, found + key.length);
    if (value === -1 || run.toString("latin1", value, value + 4) === "null") continue;
    const { start, end } = eventAround(run, found, framing);
    events.push(eventJson(run.toString("utf8", start, end), framing));
    found = end - key.length;
  }
  return events;
}
