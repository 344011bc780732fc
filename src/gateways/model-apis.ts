// What the model gateway knows of each provider API's wire format: where a request goes
// upstream, how it asks for a stream, where each API reports usage (in a response and in a
// stream), where the generated text is (to estimate tokens as a stream flows), and the error bodies and
// stream error events each API's SDKs understand. Nothing here does I/O.
import { ModelProviderApi } from "../gen/agentmachine/v1/operation_pb.js";

export type ApiName = "openai" | "anthropic" | "ollama";

export interface Usage {
  input: bigint;
  output: bigint;
}

/** The kinds of refusal a gateway answers, each mapped to what the API's SDKs expect. */
export type ErrorKind = "auth" | "permission" | "budget" | "not_found" | "invalid" | "upstream";

const statusOf: Record<ErrorKind, number> = { auth: 401, permission: 403, budget: 429, not_found: 404, invalid: 400, upstream: 502 };

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);
const count = (value: unknown): bigint | undefined => (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : undefined);

export interface ModelApi {
  name: ApiName;
  /** How a stream is framed: server-sent events or one JSON document per line. */
  framing: "sse" | "ndjson";
  /** Whether the request asks for a stream. */
  streams(body: Json): boolean;
  /** The request as sent upstream: the model as the provider names it, usage asked for in streams. */
  upstreamBody(body: Json, model: string, stream: boolean): Json;
  /** Headers carrying the provider's key. */
  keyHeaders(key: string): Record<string, string>;
  /** Usage a whole (not streamed) response reports. */
  responseUsage(body: unknown): Usage | undefined;
  /** Usage one stream event reports, in part: each API reports input and output at different points. */
  eventUsage(event: unknown): Partial<Usage> | undefined;
  /** The keys (quoted) whose string values are the generated text, in a response or a stream event (stream-scan.ts). */
  textKeys: readonly string[];
  /** The key (quoted) of the stream events that carry usage, when its value is not null: the only events parsed. */
  usageKey: string;
  /** The prompt's text, for the estimate charged before the provider answers. */
  promptText(body: Json): string;
  /** An error response body. */
  errorBody(kind: ErrorKind, message: string, code?: string): Json;
  /** The bytes of an error event that ends a stream. */
  streamError(kind: ErrorKind, message: string, code?: string): string;
}

export function errorStatus(kind: ErrorKind): number {
  return statusOf[kind];
}

function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => (isObject(part) && typeof part.text === "string" ? part.text : "")).join(" ");
  return "";
}

function messagesText(body: Json): string {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const system = textOf(body.system);
  return [system, ...messages.map((message) => (isObject(message) ? textOf(message.content) : ""))].join("\n");
}

const openaiErrorType: Record<ErrorKind, string> = {
  auth: "invalid_request_error",
  permission: "permission_error",
  budget: "insufficient_quota",
  not_found: "invalid_request_error",
  invalid: "invalid_request_error",
  upstream: "api_error",
};

const openai: ModelApi = {
  name: "openai",
  framing: "sse",
  streams: (body) => body.stream === true,
  upstreamBody: (body, model, stream) => {
    if (!stream) return { ...body, model };
    const options = isObject(body.stream_options) ? body.stream_options : {};
    return { ...body, model, stream_options: { ...options, include_usage: true } };
  },
  keyHeaders: (key) => ({ authorization: `Bearer ${key}` }),
  responseUsage: (body) => {
    const usage = isObject(body) && isObject(body.usage) ? body.usage : undefined;
    const input = count(usage?.prompt_tokens);
    const output = count(usage?.completion_tokens);
    return input === undefined || output === undefined ? undefined : { input, output };
  },
  eventUsage: (event) => openai.responseUsage(event),
  // A choice's `delta.content` in a stream, `message.content` in a response.
  textKeys: ['"content"'],
  usageKey: '"usage"',
  promptText: messagesText,
  errorBody: (kind, message, code) => ({ error: { message, type: openaiErrorType[kind], param: null, code: code ?? null } }),
  streamError: (kind, message, code) => `data: ${JSON.stringify(openai.errorBody(kind, message, code))}\n\n`,
};

const anthropicErrorType: Record<ErrorKind, string> = {
  auth: "authentication_error",
  permission: "permission_error",
  budget: "rate_limit_error",
  not_found: "not_found_error",
  invalid: "invalid_request_error",
  upstream: "api_error",
};

const anthropic: ModelApi = {
  name: "anthropic",
  framing: "sse",
  streams: (body) => body.stream === true,
  upstreamBody: (body, model) => ({ ...body, model }),
  keyHeaders: (key) => ({ "x-api-key": key }),
  responseUsage: (body) => {
    const usage = isObject(body) && isObject(body.usage) ? body.usage : undefined;
    const input = count(usage?.input_tokens);
    const output = count(usage?.output_tokens);
    return input === undefined || output === undefined ? undefined : { input, output };
  },
  // message_start carries the input tokens, each message_delta the output tokens so far.
  eventUsage: (event) => {
    if (!isObject(event)) return undefined;
    if (event.type === "message_start" && isObject(event.message) && isObject(event.message.usage)) {
      const input = count(event.message.usage.input_tokens);
      return input === undefined ? undefined : { input };
    }
    if (event.type === "message_delta" && isObject(event.usage)) {
      const output = count(event.usage.output_tokens);
      return output === undefined ? undefined : { output };
    }
    return undefined;
  },
  // A text block's `text`, a content_block_delta's `delta.text`.
  textKeys: ['"text"'],
  usageKey: '"usage"',
  promptText: messagesText,
  errorBody: (kind, message) => ({ type: "error", error: { type: anthropicErrorType[kind], message } }),
  streamError: (kind, message) => `event: error\ndata: ${JSON.stringify(anthropic.errorBody(kind, message))}\n\n`,
};

const ollama: ModelApi = {
  name: "ollama",
  framing: "ndjson",
  // Ollama streams unless asked not to.
  streams: (body) => body.stream !== false,
  upstreamBody: (body, model) => ({ ...body, model }),
  keyHeaders: (key) => ({ authorization: `Bearer ${key}` }),
  responseUsage: (body) => {
    if (!isObject(body) || body.done !== true) return undefined;
    const input = count(body.prompt_eval_count);
    const output = count(body.eval_count);
    return input === undefined || output === undefined ? undefined : { input, output };
  },
  eventUsage: (event) => ollama.responseUsage(event),
  // /api/generate's `response`, /api/chat's `message.content`; the counts come with the last line.
  textKeys: ['"response"', '"content"'],
  usageKey: '"eval_count"',
  promptText: (body) => (typeof body.prompt === "string" ? `${textOf(body.system)}\n${body.prompt}` : messagesText(body)),
  errorBody: (_kind, message) => ({ error: message }),
  streamError: (_kind, message) => `${JSON.stringify({ error: message })}\n`,
};

export const modelApis: Record<ApiName, ModelApi> = { openai, anthropic, ollama };

/** The wire format a binding speaks: as declared, else inferred from the provider's name (OpenAI-compatible by default). */
export function bindingApi(api: ModelProviderApi, provider: string): ApiName {
  if (api === ModelProviderApi.ANTHROPIC || (api === ModelProviderApi.UNSPECIFIED && provider === "anthropic")) return "anthropic";
  if (api === ModelProviderApi.OLLAMA || (api === ModelProviderApi.UNSPECIFIED && provider === "ollama")) return "ollama";
  return "openai";
}

/**
 * Tokens a text of `characters` is estimated at before (or without) the provider's count: one per four
 * characters, rounded up, and at least one for a text that is not empty — the usual rule of
 * thumb for English with BPE tokenizers.
 */
export function estimateTokens(characters: number): bigint {
  return BigInt(Math.ceil(characters / 4));
}
