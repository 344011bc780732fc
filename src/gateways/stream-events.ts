// Splits a provider's streamed response into whole events as the bytes arrive, so the model
// gateway can forward each event unchanged and read its JSON (usage, text) on the way:
// server-sent events (OpenAI, Anthropic) end with a blank line, NDJSON lines (Ollama) with a
// newline. An event's JSON is undefined when it has none (`data: [DONE]`, a comment).

export interface StreamEvent {
  /** The event's bytes as the provider sent them, terminator included. */
  raw: string;
  json: unknown;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function sseData(raw: string): unknown {
  // The common case, one `data:` line, without splitting the event into lines.
  if (raw.startsWith("data: ")) {
    const newline = raw.indexOf("\n");
    const end = newline === -1 ? raw.length : raw[newline - 1] === "\r" ? newline - 1 : newline;
    const line = raw.slice(6, end);
    if (raw.indexOf("data:", 6) === -1) return line === "" ? undefined : parse(line);
  }
  const data = raw
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  return data === "" ? undefined : parse(data);
}

export class StreamEvents {
  private pending = "";
  private readonly decoder = new TextDecoder();

  constructor(private readonly framing: "sse" | "ndjson") {}

  /** The events `chunk` completes. */
  push(chunk: Uint8Array): StreamEvent[] {
    this.pending += this.decoder.decode(chunk, { stream: true });
    const separator = this.framing === "sse" ? /\r?\n\r?\n/g : /\n/g;
    const events: StreamEvent[] = [];
    let start = 0;
    for (let match = separator.exec(this.pending); match !== null; match = separator.exec(this.pending)) {
      const end = match.index + match[0].length;
      const raw = this.pending.slice(start, end);
      events.push({ raw, json: this.framing === "sse" ? sseData(raw) : parse(raw) });
      start = end;
    }
    this.pending = this.pending.slice(start);
    return events;
  }

  /** What is left when the stream ends (an event without its terminator), as an event. */
  end(): StreamEvent[] {
    const raw = this.pending + this.decoder.decode();
    this.pending = "";
    if (raw.trim() === "") return [];
    return [{ raw, json: this.framing === "sse" ? sseData(raw) : parse(raw) }];
  }
}
