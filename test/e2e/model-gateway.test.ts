// The model-provider gateway end to end, over real sockets against a real store, with a local
// stand-in provider: OpenAI, Anthropic and Ollama requests with an execution's own credential,
// decided by the runtime-call path (scope, profile rules, the modelProviderUse gate seeing
// `input.model`), charged one model call and the tokens the provider reported (exactly, under 20
// concurrent streams), refused before the provider when the budget cannot cover them, cut at
// the budget and on revocation, audited per call; the provider's key (a canary) reaches the
// provider and nothing else. The `openai` and `@anthropic-ai/sdk` SDKs are used as agents use
// them, from this process and from inside a sandboxed execution (examples/model-gateway).
import { execFile } from "node:child_process";
import * as http2 from "node:http2";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { toJsonString } from "@bufbuild/protobuf";
import Anthropic from "@anthropic-ai/sdk";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditRecordSchema, type AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { BudgetDimension } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DiagnosticsService } from "../../src/gen/agentmachine/v1/diagnostics_service_pb.js";
import { ModelProviderApi, StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { bearer } from "../helpers/auth.js";
import { allAuditRecords } from "../helpers/audit-records.js";
import { requestId, waitForEnd } from "../helpers/operations.js";
import { cancelAndWait, clientsFor, createProfileWith, startCredentialed, type Clients, type RunningExecution, type BudgetInit } from "../helpers/runtime.js";
import { repoRoot, startTestServer, tempDir, TEST_POLICIES, type TestServer } from "../helpers/server.js";
import { PROMPT_TOKENS, startStandInProvider, type StandInProvider } from "../helpers/stand-in-provider.js";

const CANARY = `sk-canary-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
const KEY_VAR = "AMCTL_PROVIDER_STANDIN_KEY";
const WORDS = 5;
const REPORTED = BigInt(PROMPT_TOKENS + WORDS);

let server: TestServer;
let provider: StandInProvider;
let root: Clients;
let profile: string;
/** Every response body the gateway gave in this file, searched for the canary at the end. */
const answers: string[] = [];

/** The test policies, with a deny rule for one model on the personal profile type. */
function policiesDenyingAModel(): string {
  const dir = join(tempDir(), "policies");
  cpSync(TEST_POLICIES, dir, { recursive: true });
  const personal = readFileSync(join(dir, "personal.yaml"), "utf8").replace(
    "rules:\n",
    "rules:\n  - id: test.deny-forbidden-model\n    gate: modelProviderUse\n    effect: deny\n    when: \"input.model == 'forbidden-model'\"\n",
  );
  writeFileSync(join(dir, "personal.yaml"), personal);
  return dir;
}

async function bind(providerProfile: string, provider: string, api: ModelProviderApi, endpoint: string, apiKeyRef = `env:${KEY_VAR}`) {
  const { operation } = await root.operations.submitOperation({
    requestId: requestId("bind"),
    profile: providerProfile,
    spec: { kind: { case: "modelProviderBind", value: { provider, api, endpoint, apiKeyRef } } },
  });
  expect((await waitForEnd(root.operations, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
}

function start(budget: BudgetInit = {}): Promise<RunningExecution> {
  return startCredentialed(server.url, server.dataDir, root.operations, profile, { modelCalls: 1000n, tokens: 1_000_000n, wallClockSeconds: 120n, ...budget });
}

async function post(exec: RunningExecution, path: string, body: object, headers: Record<string, string> = { authorization: `Bearer ${exec.token}` }) {
  const response = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  answers.push(text);
  return { status: response.status, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const chat = (model = "gpt-test") => ({ model, messages: [{ role: "user" as const, content: "hi" }] });
const streamed = (model = "gpt-test") => ({ ...chat(model), stream: true as const });

const openaiOf = (exec: RunningExecution) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: exec.token, maxRetries: 0 });

/** Runs `body` while the provider answers `words` words, a millisecond apart (so a stream is many reads). */
async function withSlowProvider(words: number, body: () => Promise<void>): Promise<void> {
  provider.options.words = words;
  provider.options.delayMs = 1;
  try {
    await body();
  } finally {
    provider.options.words = WORDS;
    provider.options.delayMs = 0;
  }
}

async function usageOf(name: string) {
  const { operation } = await root.operations.getOperation({ name });
  return operation!;
}

async function modelCallRecords(operation: string): Promise<AuditRecord[]> {
  const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
  return (await allAuditRecords(audit)).filter((record) => record.rpc === "model-gateway" && record.resource === operation);
}

beforeAll(async () => {
  process.env[KEY_VAR] = CANARY;
  provider = await startStandInProvider({ words: WORDS });
  server = await startTestServer({ policyDir: policiesDenyingAModel(), maxConcurrentExecutions: 8 });
  root = clientsFor(server.url, server.token);
  profile = await createProfileWith(root.operations, "agents", ProfileType.PERSONAL);
  const models = await createProfileWith(root.operations, "models", ProfileType.LOCAL_MODEL_PROVIDER);
  await bind(models, "standin", ModelProviderApi.OPENAI, `${provider.url}/v1`);
  await bind(models, "claude", ModelProviderApi.ANTHROPIC, provider.url);
  await bind(models, "llama", ModelProviderApi.OLLAMA, provider.url);
});
afterAll(async () => {
  await server?.close();
  await provider?.close();
  delete process.env[KEY_VAR];
});

describe("OpenAI chat completions", () => {
  it("answers with the provider's completion, charges one model call and the reported tokens, and audits provider, model and tokens", async () => {
    const exec = await start();
    const before = provider.received.length;
    const completion = await openaiOf(exec).chat.completions.create(chat());
    expect(completion.choices[0]!.message.content).toBe("tok ".repeat(WORDS));
    // The provider got its own key and the model as it names it, never the execution's credential.
    const got = provider.received.slice(before);
    expect(got).toHaveLength(1);
    expect(got[0]!.headers.authorization).toBe(`Bearer ${CANARY}`);
    expect(JSON.stringify(got[0]!.headers)).not.toContain(exec.token);
    expect(got[0]!.body.model).toBe("gpt-test");
    expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 1n, tokens: REPORTED });
    const [record] = await modelCallRecords(exec.operation.name);
    expect(record?.modelCall).toMatchObject({
      provider: "standin",
      model: "gpt-test",
      api: "openai",
      inputTokens: BigInt(PROMPT_TOKENS),
      outputTokens: BigInt(WORDS),
      tokensEstimated: false,
      stream: false,
    });
    expect(record?.decision).toMatchObject({ allowed: true, rule: "test.allow-model-providers" });
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("streams as server-sent events, asks the provider for usage, and charges the final usage chunk", async () => {
    const exec = await start();
    const before = provider.received.length;
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of await openaiOf(exec).chat.completions.create(streamed("standin/gpt-test"))) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage ??= chunk.usage ?? undefined;
    }
    expect(text).toBe("tok ".repeat(WORDS));
    expect(usage).toMatchObject({ prompt_tokens: PROMPT_TOKENS, completion_tokens: WORDS });
    // `standin/` picked the provider and was taken off the model; usage was asked for.
    expect(provider.received[before]!.body).toMatchObject({ model: "gpt-test", stream_options: { include_usage: true } });
    expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 1n, tokens: REPORTED });
    const [record] = await modelCallRecords(exec.operation.name);
    expect(record?.modelCall).toMatchObject({ stream: true, inputTokens: BigInt(PROMPT_TOKENS), outputTokens: BigInt(WORDS), tokensEstimated: false });
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("charges an estimate, marked as one, when the provider reports no usage", async () => {
    provider.options.noUsage = true;
    try {
      const exec = await start();
      for await (const _ of await openaiOf(exec).chat.completions.create(streamed("gpt-test"))) void _;
      // "hi" (and the message separator) is one token by the estimate, each "tok " one.
      expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 1n, tokens: BigInt(1 + WORDS) });
      const [record] = await modelCallRecords(exec.operation.name);
      expect(record?.modelCall).toMatchObject({ tokensEstimated: true, inputTokens: 1n, outputTokens: BigInt(WORDS) });
      await cancelAndWait(root.operations, exec.operation.name);
    } finally {
      provider.options.noUsage = false;
    }
  });

  it("warns once with a progress event when its tokens cross 80 % of the budget", async () => {
    const exec = await start({ tokens: 15n });
    expect((await post(exec, "/v1/chat/completions", chat())).status).toBe(200);
    const { events, operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.usage?.tokens).toBe(REPORTED);
    const warnings = events.flatMap((e) => (e.attributes.case === "progress" ? e.attributes.value.budgetWarnings : []));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ dimension: BudgetDimension.TOKENS, used: REPORTED, limit: 15n });
  });

  it("lists the bound models at /v1/models and accepts the credential as x-api-key too", async () => {
    const exec = await start();
    const response = await fetch(`${server.url}/v1/models`, { headers: { "x-api-key": exec.token } });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ object: "list" });
    await cancelAndWait(root.operations, exec.operation.name);
  });
});

describe("refusals", () => {
  it("refuses a model the policy denies with a 403 the SDK surfaces, naming the rule in the audit log, and asks the provider nothing", async () => {
    const exec = await start();
    const before = provider.received.length;
    const error = await openaiOf(exec)
      .chat.completions.create(chat("forbidden-model"))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as Error).message).toContain("test.deny-forbidden-model");
    expect(provider.received.length).toBe(before);
    const [record] = await modelCallRecords(exec.operation.name);
    expect(record?.decision).toMatchObject({ allowed: false, rule: "test.deny-forbidden-model" });
    expect(record?.modelCall).toMatchObject({ provider: "standin", model: "forbidden-model" });
    // Refused calls are not charged.
    expect((await usageOf(exec.operation.name)).usage?.modelCalls ?? 0n).toBe(0n);
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("refuses without a credential, with another's, and with a finished execution's (401)", async () => {
    const exec = await start();
    expect((await post(exec, "/v1/chat/completions", chat(), {})).status).toBe(401);
    expect((await post(exec, "/v1/chat/completions", chat(), { authorization: `Bearer ${server.token}` })).status).toBe(401);
    await cancelAndWait(root.operations, exec.operation.name);
    const late = await post(exec, "/v1/chat/completions", chat());
    expect(late.status).toBe(401);
    expect(late.json()).toMatchObject({ error: { type: "invalid_request_error" } });
  });

  it("refuses a call the modelCalls budget cannot cover with a 429 naming the dimension, before the provider, and ends the task budget-exhausted", async () => {
    const exec = await start({ modelCalls: 1n });
    expect((await post(exec, "/v1/chat/completions", chat())).status).toBe(200);
    const before = provider.received.length;
    const refused = await post(exec, "/v1/chat/completions", chat());
    expect(refused.status).toBe(429);
    expect(refused.json()).toMatchObject({ error: { type: "insufficient_quota", code: "modelCalls" } });
    expect(provider.received.length).toBe(before);
    const { operation } = await waitForEnd(root.operations, exec.operation.name);
    expect(operation).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.MODEL_CALLS } });
  });

  it("refuses a key reference that could make the server send another of its secrets (InvalidArgument naming api_key_ref), binding nothing", async () => {
    const models = "profiles/models";
    for (const apiKeyRef of ["env:HOME", "env:AMCTL_TOKEN", "file:../audit/signing-key.pem", "file:/etc/shadow", "env:AMCTL_PROVIDER_X\nY"]) {
      const error = await root.operations
        .submitOperation({
          requestId: requestId("bind"),
          profile: models,
          spec: { kind: { case: "modelProviderBind", value: { provider: "thief", endpoint: "http://127.0.0.1:9/v1", apiKeyRef } } },
        })
        .catch((e: unknown) => ConnectError.from(e));
      expect(error, apiKeyRef).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code, apiKeyRef).toBe(Code.InvalidArgument);
      expect((error as ConnectError).message, apiKeyRef).toContain("api_key_ref");
    }
    const { operations } = await root.operations.listOperations({ filter: { profile: models }, pageSize: 100 });
    expect(operations.filter((o) => o.spec?.kind.case === "modelProviderBind" && o.spec.kind.value.provider === "thief")).toHaveLength(0);
  });

  it("serves the same calls over HTTP/2", async () => {
    const exec = await start();
    const session = http2.connect(server.url);
    try {
      const text = await new Promise<string>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/v1/chat/completions",
          "content-type": "application/json",
          authorization: `Bearer ${exec.token}`,
        });
        let body = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (body += chunk));
        stream.on("end", () => resolve(body));
        stream.on("error", reject);
        stream.end(JSON.stringify(streamed()));
      });
      answers.push(text);
      expect(text).toContain('"usage"');
      expect(text.trim().endsWith("data: [DONE]")).toBe(true);
      expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 1n, tokens: REPORTED });
    } finally {
      session.close();
      await cancelAndWait(root.operations, exec.operation.name);
    }
  });
});

describe("budgets under concurrency", () => {
  it("charges exactly the reported tokens of 20 concurrent streaming calls", async () => {
    const exec = await start({ modelCalls: 20n, tokens: 20n * REPORTED });
    const client = openaiOf(exec);
    const texts = await Promise.all(
      Array.from({ length: 20 }, async () => {
        let text = "";
        for await (const chunk of await client.chat.completions.create(streamed("gpt-test"))) text += chunk.choices[0]?.delta?.content ?? "";
        return text;
      }),
    );
    expect(texts.every((text) => text === "tok ".repeat(WORDS))).toBe(true);
    const operation = await usageOf(exec.operation.name);
    expect(operation.state).toBe(TaskState.RUNNING);
    expect(operation.usage).toMatchObject({ modelCalls: 20n, tokens: 20n * REPORTED });
    expect(await modelCallRecords(exec.operation.name)).toHaveLength(20);
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("lets exactly as many of 20 concurrent streams reach the provider as the modelCalls budget holds", async () => {
    provider.options.delayMs = 20;
    try {
      const exec = await start({ modelCalls: 10n });
      const before = provider.received.length;
      const client = openaiOf(exec);
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, async () => {
          try {
            for await (const _ of await client.chat.completions.create(streamed("gpt-test"))) void _;
            return "done";
          } catch (error) {
            return error instanceof OpenAI.APIError ? String(error.status ?? "stream") : "other";
          }
        }),
      );
      expect(provider.received.length - before).toBe(10);
      expect(outcomes.filter((o) => o === "429").length).toBeGreaterThanOrEqual(1);
      const { operation } = await waitForEnd(root.operations, exec.operation.name);
      expect(operation).toMatchObject({ state: TaskState.FAILED, usage: { modelCalls: 10n }, stopCause: { reason: StopReason.BUDGET_EXHAUSTED } });
    } finally {
      provider.options.delayMs = 0;
    }
  });

  it("reserves tokens ahead of a stream only below the budget's warning line: a stream that ends under it is neither cut nor warned", async () => {
    const words = 60;
    const exec = await start({ tokens: 100n });
    let text = "";
    await withSlowProvider(words, async () => {
      for await (const chunk of await openaiOf(exec).chat.completions.create(streamed("gpt-test"))) text += chunk.choices[0]?.delta?.content ?? "";
    });
    expect(text).toBe("tok ".repeat(words));
    const { events, operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.usage?.tokens).toBe(BigInt(PROMPT_TOKENS + words));
    expect(events.filter((e) => e.attributes.case === "progress" && e.attributes.value.budgetWarnings.length > 0)).toHaveLength(0);
  });

  it("reserves a stream's first tokens in its admission's commit, and settles to the reported usage", async () => {
    const words = 50;
    const exec = await start();
    let midStream: bigint | undefined;
    await withSlowProvider(words, async () => {
      for await (const chunk of await openaiOf(exec).chat.completions.create(streamed("gpt-test"))) {
        if (chunk.choices[0]?.delta?.content && midStream === undefined) midStream = (await usageOf(exec.operation.name)).usage?.tokens;
      }
    });
    // The prompt's estimate (one token for "hi") and 4,096 ahead, not a charge per read.
    expect(midStream).toBe(1n + 4_096n);
    const { operation } = await cancelAndWait(root.operations, exec.operation.name);
    expect(operation.usage).toMatchObject({ modelCalls: 1n, tokens: BigInt(PROMPT_TOKENS + words) });
  });

  it("cuts a stream at the tokens budget with the API's error event and ends the task budget-exhausted", async () => {
    provider.options.words = 200;
    provider.options.delayMs = 2;
    try {
      const exec = await start({ tokens: 50n });
      let text = "";
      const error = await (async () => {
        for await (const chunk of await openaiOf(exec).chat.completions.create(streamed("gpt-test"))) text += chunk.choices[0]?.delta?.content ?? "";
      })().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.APIError);
      expect(String((error as Error).message)).toContain("tokens budget is exhausted");
      // What was forwarded fits the budget: the prompt's token and at most 49 words.
      expect(text.length / 4).toBeLessThanOrEqual(49);
      expect(text.length).toBeGreaterThan(0);
      const { operation } = await waitForEnd(root.operations, exec.operation.name);
      expect(operation).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.TOKENS } });
      expect(operation.usage!.tokens).toBeLessThanOrEqual(50n);
    } finally {
      provider.options.words = WORDS;
      provider.options.delayMs = 0;
    }
  });
});

describe("revocation", () => {
  it("ends a stream in flight when the execution is cancelled (its credential revoked)", async () => {
    provider.options.words = 2000;
    provider.options.delayMs = 5;
    try {
      const exec = await start();
      const response = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${exec.token}` },
        body: JSON.stringify(streamed("gpt-test")),
      });
      const reader = response.body!.getReader();
      let text = "";
      const decoder = new TextDecoder();
      while (!text.includes("tok")) text += decoder.decode((await reader.read()).value);
      const cancelled = Date.now();
      await root.operations.cancelOperation({ name: exec.operation.name });
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value);
      }
      expect(Date.now() - cancelled).toBeLessThan(5000);
      expect(text.split("tok").length - 1).toBeLessThan(2000);
      expect(text).toContain('"error"');
      await waitForEnd(root.operations, exec.operation.name);
    } finally {
      provider.options.words = WORDS;
      provider.options.delayMs = 0;
    }
  });
});

describe("Anthropic messages", () => {
  it("answers whole and streamed through the SDK, with x-api-key, charging the reported usage", async () => {
    const exec = await start();
    const before = provider.received.length;
    const anthropic = new Anthropic({ baseURL: server.url, apiKey: exec.token, maxRetries: 0 });
    const message = await anthropic.messages.create({ model: "claude-test", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
    expect(message.content[0]).toMatchObject({ type: "text", text: "tok ".repeat(WORDS) });
    const final = await anthropic.messages.stream({ model: "claude-test", max_tokens: 100, messages: [{ role: "user", content: "hi" }] }).finalMessage();
    expect(final.usage.output_tokens).toBe(WORDS);
    const got = provider.received.slice(before);
    expect(got.map((r) => r.headers["x-api-key"])).toEqual([CANARY, CANARY]);
    expect(got[0]!.headers["anthropic-version"]).toBeDefined();
    expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 2n, tokens: 2n * REPORTED });
    const records = await modelCallRecords(exec.operation.name);
    expect(records.map((r) => r.modelCall?.provider)).toEqual(["claude", "claude"]);
    await cancelAndWait(root.operations, exec.operation.name);
  });

  it("refuses a budget it cannot cover with Anthropic's rate_limit_error", async () => {
    const exec = await start({ modelCalls: 1n });
    const ask = () => post(exec, "/v1/messages", { model: "claude-test", max_tokens: 10, messages: [] }, { "x-api-key": exec.token });
    expect((await ask()).status).toBe(200);
    const refused = await ask();
    expect(refused.status).toBe(429);
    expect(refused.json()).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
    await waitForEnd(root.operations, exec.operation.name);
  });
});

describe("Ollama chat and generate", () => {
  it("streams /api/chat as NDJSON and answers /api/generate whole, charging the reported counts", async () => {
    const exec = await start();
    const streamed = await post(exec, "/api/chat", { model: "llama3", messages: [{ role: "user", content: "hi" }] });
    const lines = streamed.text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { done: boolean; eval_count?: number });
    expect(lines.at(-1)).toMatchObject({ done: true, eval_count: WORDS });
    const whole = await post(exec, "/api/generate", { model: "llama3", prompt: "hi", stream: false });
    expect(whole.json()).toMatchObject({ response: "tok ".repeat(WORDS), done: true });
    expect((await usageOf(exec.operation.name)).usage).toMatchObject({ modelCalls: 2n, tokens: 2n * REPORTED });
    await cancelAndWait(root.operations, exec.operation.name);
  });
});

describe("the provider's key", () => {
  it("is found in no response, log line, event, audit record or diagnostics bundle", async () => {
    // A diagnostics bundle of the agents' profile, made after every call above.
    const { operation } = await root.operations.submitOperation({
      requestId: requestId("diag"),
      profile,
      spec: { kind: { case: "diagnosticsExport", value: {} } },
    });
    expect((await waitForEnd(root.operations, operation!.name, 60_000)).operation.state).toBe(TaskState.COMPLETED);
    const diagnostics = createClient(DiagnosticsService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
    const chunks: Uint8Array[] = [];
    for await (const { chunk } of diagnostics.downloadDiagnostics({ operation: operation!.name })) chunks.push(chunk);
    const bundle = gunzipSync(Buffer.concat(chunks)).toString("latin1");
    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
    const records = (await allAuditRecords(audit)).map((record) => toJsonString(AuditRecordSchema, record));
    expect(records.some((record) => record.includes("model-gateway"))).toBe(true);
    const events: string[] = [];
    try {
      for await (const { kind } of root.operations.watchEvents({}, { timeoutMs: 3000 })) {
        if (kind.case === "event") events.push(toJsonString(OperationEventSchema, kind.value));
      }
    } catch {
      // The deadline ends the replay.
    }
    expect(events.length).toBeGreaterThan(10);
    const haystacks = { answers: answers.join("\n"), logs: JSON.stringify(server.logs), audit: records.join("\n"), events: events.join("\n"), bundle };
    expect(answers.length).toBeGreaterThan(5);
    for (const [where, text] of Object.entries(haystacks)) expect(text.includes(CANARY), where).toBe(false);
  });
});

describe("examples/model-gateway", () => {
  it("governs an unmodified agent (plain OpenAI and Anthropic SDK calls) in a sandboxed execution end to end", async () => {
    const walkthrough = await startTestServer({ policyDir: policiesDenyingAModel() });
    process.env.AMCTL_PROVIDER_DEMO_KEY = CANARY;
    try {
      const stdout = await new Promise<string>((resolve, reject) =>
        execFile(
          "bash",
          [join(repoRoot, "examples/model-gateway/walkthrough.sh"), walkthrough.url, provider.url],
          { cwd: "/tmp", env: { ...process.env, AMCTL_TOKEN: walkthrough.token }, timeout: 240_000 },
          (error, out, err) => (error === null ? resolve(out) : reject(new Error(`walkthrough failed:\n${out}\n${err}`))),
        ),
      );
      expect(stdout).toContain(`openai: ${"tok ".repeat(WORDS).trim()}`);
      expect(stdout).toContain(`openai stream: ${"tok ".repeat(WORDS).trim()}`);
      expect(stdout).toContain(`anthropic: ${"tok ".repeat(WORDS).trim()}`);
      expect(stdout).toContain(`anthropic stream: ${"tok ".repeat(WORDS).trim()} (${WORDS} tokens)`);
      expect(stdout).toContain("forbidden-model: refused 403 permission_error");
      expect(stdout).toContain(`"usage":{"modelCalls":"4","tokens":"${4n * REPORTED}"}`);
      expect(stdout).toMatch(/"allowed":false,"rule":"test.deny-forbidden-model"/);
      expect(stdout).not.toContain(CANARY);
    } finally {
      delete process.env.AMCTL_PROVIDER_DEMO_KEY;
      await walkthrough.close();
    }
  }, 300_000);
});

describe("several providers speaking one API", () => {
  it("refuses a model the rule cannot place, naming the providers, and routes provider/model", async () => {
    await bind("profiles/models", "other", ModelProviderApi.OPENAI, `${provider.url}/v1`);
    const exec = await start();
    const ambiguous = await post(exec, "/v1/chat/completions", chat());
    expect(ambiguous.status).toBe(400);
    expect(ambiguous.json()).toMatchObject({ error: { type: "invalid_request_error" } });
    expect(String((ambiguous.json().error as { message: string }).message)).toMatch(/standin, other|other, standin/);
    expect((await post(exec, "/v1/chat/completions", chat("other/gpt-test"))).status).toBe(200);
    const [record] = await modelCallRecords(exec.operation.name);
    expect(record?.modelCall).toMatchObject({ provider: "other", model: "gpt-test" });
    await cancelAndWait(root.operations, exec.operation.name);
  });
});
