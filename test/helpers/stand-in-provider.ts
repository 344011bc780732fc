// A local stand-in for a model provider, speaking OpenAI's chat completions, Anthropic's
// messages and Ollama's chat/generate APIs, whole and streamed (SSE, NDJSON), with usage. Its
// answer is `words` words (`tok` each, so each is one token by the gateway's estimate), reported
// as `words` completion tokens; the prompt is reported as PROMPT_TOKENS. It records the headers
// and bodies it got, so tests can check what reached it (the provider key, never the
// execution's credential), and can pause between words.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export const PROMPT_TOKENS = 7;

export interface StandInOptions {
  /** Words in each answer (default 5). */
  words?: number;
  /** Milliseconds between streamed words (default 0). */
  delayMs?: number;
  /** Omit usage from responses and streams (a provider that reports none). */
  noUsage?: boolean;
}

export interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
}

export interface StandInProvider {
  /** http://127.0.0.1:PORT */
  url: string;
  received: Received[];
  options: StandInOptions;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startStandInProvider(options: StandInOptions = {}): Promise<StandInProvider> {
  const received: Received[] = [];
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = chunks.length > 0 ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>) : {};
    received.push({ path: req.url ?? "", headers: req.headers, body });
    const words = options.words ?? 5;
    const usage = options.noUsage !== true;
    const model = String(body.model ?? "");
    const delay = options.delayMs ?? 0;
    const write = async (text: string) => {
      if (res.destroyed) return;
      res.write(text);
      if (delay > 0) await sleep(delay);
    };
    if (req.url === "/v1/chat/completions" || req.url === "/chat/completions") {
      const includeUsage = usage && (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
      if (body.stream !== true) {
        const content = Array.from({ length: words }, () => "tok ").join("");
        return json(res, {
          id: "chatcmpl-1",
          object: "chat.completion",
          created: 0,
          model,
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
          ...(usage ? { usage: { prompt_tokens: PROMPT_TOKENS, completion_tokens: words, total_tokens: PROMPT_TOKENS + words } } : {}),
        });
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = (delta: object, finish: string | null, extra: object = {}) =>
        `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 0, model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`;
      await write(chunk({ role: "assistant", content: "" }, null));
      for (let i = 0; i < words; i += 1) await write(chunk({ content: "tok " }, null));
      await write(chunk({}, "stop"));
      if (includeUsage) {
        await write(
          `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 0, model, choices: [], usage: { prompt_tokens: PROMPT_TOKENS, completion_tokens: words, total_tokens: PROMPT_TOKENS + words } })}\n\n`,
        );
      }
      return res.end("data: [DONE]\n\n");
    }
    if (req.url === "/v1/messages") {
      if (body.stream !== true) {
        return json(res, {
          id: "msg_1",
          type: "message",
          role: "assistant",
          model,
          content: [{ type: "text", text: Array.from({ length: words }, () => "tok ").join("") }],
          stop_reason: "end_turn",
          stop_sequence: null,
          usage: { input_tokens: usage ? PROMPT_TOKENS : 0, output_tokens: usage ? words : 0 },
        });
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      const event = (type: string, data: object) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
      await write(
        event("message_start", {
          message: {
            id: "msg_1",
            type: "message",
            role: "assistant",
            model,
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: PROMPT_TOKENS, output_tokens: 1 },
          },
        }),
      );
      await write(event("content_block_start", { index: 0, content_block: { type: "text", text: "" } }));
      for (let i = 0; i < words; i += 1) await write(event("content_block_delta", { index: 0, delta: { type: "text_delta", text: "tok " } }));
      await write(event("content_block_stop", { index: 0 }));
      await write(event("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: words } }));
      return res.end(event("message_stop", {}));
    }
    if (req.url === "/api/chat" || req.url === "/api/generate") {
      const chat = req.url === "/api/chat";
      const piece = (text: string, done: boolean) => ({
        model,
        created_at: "1970-01-01T00:00:00Z",
        ...(chat ? { message: { role: "assistant", content: text } } : { response: text }),
        done,
        ...(done && usage ? { prompt_eval_count: PROMPT_TOKENS, eval_count: words } : {}),
      });
      if (body.stream === false) return json(res, piece(Array.from({ length: words }, () => "tok ").join(""), true));
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      for (let i = 0; i < words; i += 1) await write(`${JSON.stringify(piece("tok ", false))}\n`);
      return res.end(`${JSON.stringify(piece("", true))}\n`);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    options,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: http.ServerResponse, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
