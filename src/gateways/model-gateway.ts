// The model-provider gateway: OpenAI-, Anthropic- and Ollama-compatible endpoints on the
// server's own port, so an unmodified agent's SDK calls are governed like AuthorizeCall (see
// docs/model-gateway.md). For each request:
//
//   1. the caller's execution credential, sent where SDKs send their API key
//      (`Authorization: Bearer`, `x-api-key`), must be a running attempt's (authenticated by
//      the Authority, as every RPC is);
//   2. the request is routed to a bound provider (provider-routing.ts);
//   3. the call is decided and charged by the one runtime-call path (scope, profile rules, the
//      modelProviderUse gate with `input.model`): one model call and the prompt's estimated
//      tokens; a refusal answers the API's own error (429 for a budget) before the provider is asked;
//   4. the provider's key (provider-keys.ts) replaces the caller's credential upstream;
//   5. a stream's tokens are charged as its text flows (estimated, before it is forwarded; its bytes are forwarded
//      as they came, only the events that carry usage parsed), and it is cut with the API's
//      error event when the budget cannot cover them or the credential is revoked (the task's end
//      revokes it); at the end the tokens charged are settled to the usage the provider
//      reported (or the estimate, marked as one), and the call is audited (provider, model,
//      tokens, decision, rule; the request's digest, never a prompt or a completion).
import { createHash } from "node:crypto";
import { once } from "node:events";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "../api/logger.js";
import { allowedDecision, denialOf, type AuditDecisionInit } from "../audit/decisions.js";
import type { ModelCallSchema } from "../gen/agentmachine/v1/audit_pb.js";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import type { Authority, Principal } from "../governance/authority.js";
import { bearerToken } from "../governance/bearer.js";
import type { AuditDraft } from "../model/audit-chain.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { allows } from "../governance/attenuation.js";
import { bindingApi, errorStatus, estimateTokens, modelApis, type ApiName, type ErrorKind, type ModelApi, type Usage } from "./model-apis.js";
import { providerKey, ProviderKeyUnavailable } from "../governance/provider-keys.js";
import { routeModel } from "./provider-routing.js";
import { admitCall, attemptOfToken, chargeTokensAhead, executionCallDraft, settleCall, type RuntimeCallDeps } from "./runtime-call.js";
import { eventsWith, textLength } from "./stream-scan.js";
import { EventPump } from "./event-pump.js";
import { postUpstream, type UpstreamAnswer } from "./upstream-request.js";

export const MODEL_GATEWAY_RPC = "model-gateway";

const MAX_BODY_BYTES = 8 * 1024 * 1024;

/** The paths served, each with its API and where the request goes under the binding's endpoint. */
const routes: ReadonlyMap<string, { api: ApiName; upstream: string }> = new Map([
  ["/v1/chat/completions", { api: "openai", upstream: "/chat/completions" }],
  ["/v1/messages", { api: "anthropic", upstream: "/v1/messages" }],
  ["/api/chat", { api: "ollama", upstream: "/api/chat" }],
  ["/api/generate", { api: "ollama", upstream: "/api/generate" }],
]);

/** Request headers passed to the provider as they are (the caller's credential never is). */
const forwardedHeaders = ["anthropic-version", "anthropic-beta"];

/** HTTP/1.1 and HTTP/2 requests and responses, as the RPC handler takes them. */
type Request = Parameters<ReturnType<typeof connectNodeAdapter>>[0];
type Response = Parameters<ReturnType<typeof connectNodeAdapter>>[1];
type Json = Record<string, unknown>;

export interface ModelGatewayDeps extends RuntimeCallDeps {
  authority: Authority;
  log: Logger;
  /** Whether calls are audited (config.audit). */
  audit: boolean;
  dataDir: string;
}

class Refusal extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly decision?: AuditDecisionInit,
    readonly code?: string,
    readonly principal?: Principal,
  ) {
    super(message);
  }
}

function pathOf(req: Request): string {
  return (req.url ?? "").split("?")[0]!;
}

/** The execution credential, where OpenAI's SDKs (Authorization: Bearer) or Anthropic's (x-api-key) send their key. */
function credentialOf(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (typeof header === "string") return bearerToken(header);
  const key = req.headers["x-api-key"];
  return typeof key === "string" && key !== "" ? key : undefined;
}

async function readBody(req: Request): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Refusal("invalid", `amctl model gateway: the request body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function sendJson(res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function modelGateway(deps: ModelGatewayDeps) {
  const { store, authority, log } = deps;

  /**
   * The caller's principal and running attempt. A credential that does not authenticate is
   * refused unaudited (as the RPCs' interceptor summarizes such refusals, a flood of them must
   * not grow the log one record each); a valid one that is not a running attempt's is audited.
   */
  async function attempt(req: Request): Promise<{ principal: Principal; operation: Operation }> {
    const token = credentialOf(req);
    if (token === undefined) throw new Refusal("auth", "amctl model gateway: send the execution credential (AMCTL_TOKEN) as the API key");
    const found = await attemptOfToken(authority, store, token);
    if (found.refusal === "unauthenticated") throw new Refusal("auth", `amctl model gateway: ${found.error.rawMessage}`);
    if (found.refusal === "not-an-attempt")
      throw new Refusal("auth", `amctl model gateway: ${found.error.rawMessage}`, denialOf(found.error), undefined, found.principal);
    return found;
  }

  function draft(
    principal: Principal | undefined,
    operation: string,
    digest: string,
    decision: AuditDecisionInit,
    call?: MessageInitShape<typeof ModelCallSchema>,
  ): AuditDraft | undefined {
    if (!deps.audit) return undefined;
    const what = { rpc: MODEL_GATEWAY_RPC, commandRef: "ModelCall", operation, requestDigest: digest };
    return executionCallDraft(principal, what, decision, call !== undefined ? { modelCall: call } : {});
  }

  function record(audit: AuditDraft | undefined): void {
    if (audit === undefined) return;
    store.appendAudit(audit).catch((error: unknown) => log.error({ err: error }, "could not audit a model call"));
  }

  async function listModels(req: Request, res: Response): Promise<void> {
    const { principal } = await attempt(req);
    const scope = principal.delegation.scope!.modelProviders;
    const data = (await deps.grants.providerBindings())
      .filter((binding) => bindingApi(binding.api, binding.provider) === "openai" && binding.endpoint !== "" && allows(scope, binding.provider))
      .flatMap((binding) => binding.models.map((model) => ({ id: `${binding.provider}/${model}`, object: "model", created: 0, owned_by: binding.provider })));
    sendJson(res, 200, { object: "list", data });
  }

  async function serve(req: Request, res: Response, api: ModelApi, upstreamPath: string): Promise<void> {
    const bytes = await readBody(req);
    const digest = createHash("sha256").update(bytes).digest("hex");
    let principal: Principal | undefined;
    let operationName = "";
    try {
      let body: Json;
      try {
        body = JSON.parse(bytes.toString("utf8")) as Json;
      } catch {
        throw new Refusal("invalid", "amctl model gateway: the request body is not JSON");
      }
      const found = await attempt(req);
      principal = found.principal;
      let operation = found.operation;
      operationName = operation.name;
      if (typeof body !== "object" || body === null || typeof body.model !== "string" || body.model === "") {
        throw new Refusal("invalid", "amctl model gateway: the request names no model");
      }
      const routing = routeModel(api.name, body.model, await deps.grants.providerBindings(), principal.delegation.scope!.modelProviders);
      if ("refusal" in routing) throw new Refusal(routing.refusal.kind, routing.refusal.message);
      const { binding, model } = routing.route;
      const stream = api.streams(body);
      const promptTokens = estimateTokens(api.promptText(body).length);
      const call = create(RuntimeCallSchema, { kind: CallKind.MODEL, modelProvider: binding.provider, model, estimatedTokens: promptTokens });
      const who = principal;
      const admission = await admitCall(deps, principal, operation, call, {
        reserveTokens: stream ? FIRST_TOKENS_AHEAD : 0n,
        audit: (decision) =>
          decision.allowed === true ? undefined : draft(who, operationName, digest, decision, { provider: binding.provider, model, api: api.name, stream }),
      });
      if (!admission.allowed) {
        const kind = admission.exhausted !== undefined ? "budget" : "permission";
        throw new Refusal(kind, `amctl model gateway: ${admission.denial.rawMessage}`, undefined, admission.exhausted);
      }
      operation = admission.operation;
      const key = await providerKey(binding.apiKeyRef, deps.dataDir);
      const headers: Record<string, string> = { "content-type": "application/json", ...(key !== undefined ? api.keyHeaders(key) : {}) };
      for (const name of forwardedHeaders) {
        const value = req.headers[name];
        if (typeof value === "string") headers[name] = value;
      }
      const run = new ModelCallRun(
        deps,
        api,
        operation,
        { provider: binding.provider, model, stream },
        promptTokens,
        admission.reserved,
        (usage, estimated, ended) =>
          draft(who, operationName, digest, ended ?? allowedDecision(admission.decisions), {
            provider: binding.provider,
            model,
            api: api.name,
            stream,
            inputTokens: usage.input,
            outputTokens: usage.output,
            tokensEstimated: estimated,
          }),
      );
      await run.run(res, `${binding.endpoint.replace(/\/+$/, "")}${upstreamPath}`, headers, api.upstreamBody(body, model, stream), principal);
    } catch (error) {
      if (error instanceof ProviderKeyUnavailable) {
        log.warn({ operation: operationName, reason: error.message }, "model gateway: provider key unavailable");
        return sendJson(res, errorStatus("upstream"), api.errorBody("upstream", `amctl model gateway: ${error.message}`));
      }
      if (!(error instanceof Refusal)) throw error;
      if (error.decision !== undefined)
        record(draft(principal ?? error.principal, operationName || (error.principal?.delegation.operation ?? ""), digest, error.decision));
      sendJson(res, errorStatus(error.kind), api.errorBody(error.kind, error.message, error.code));
    }
  }

  /** Handles `req` if it is a gateway path; false otherwise (the RPC router's). */
  return (req: Request, res: Response): boolean => {
    const path = pathOf(req);
    const route = routes.get(path);
    const listing = path === "/v1/models" && req.method === "GET";
    if (route === undefined && !listing) return false;
    const api = modelApis[route?.api ?? "openai"];
    const handled =
      route === undefined
        ? listModels(req, res)
        : req.method === "POST"
          ? serve(req, res, api, route.upstream)
          : Promise.resolve(sendJson(res, 405, api.errorBody("invalid", "use POST")));
    handled.catch((error: unknown) => {
      if (error instanceof Refusal) return sendJson(res, errorStatus(error.kind), api.errorBody(error.kind, error.message));
      log.error({ err: error, path }, "model gateway failed");
      if (!res.headersSent) sendJson(res, 500, api.errorBody("upstream", "amctl model gateway failed; see the server log"));
      else res.end();
    });
    return true;
  };
}

type AuditOf = (usage: Usage, estimated: boolean, decision?: AuditDecisionInit) => AuditDraft | undefined;

/**
 * What a stream reserves at its admission, in tokens, in the commit that charges the call: a
 * stream shorter than this (most chat answers) charges nothing more until it settles.
 */
const FIRST_TOKENS_AHEAD = 4_096n;
/** The most a stream reserves ahead at once, in tokens (it reserves twice what it will have forwarded, up to this). */
const MAX_TOKENS_AHEAD = 65_536n;

/** One admitted call in flight: forwards it, charges its tokens as they come, settles and audits it. */
class ModelCallRun {
  /** Tokens charged so far: the prompt's estimate and what the admission reserved, then what a stream forwarded and reserved ahead. */
  private charged: bigint;
  /** The length of the generated text forwarded, for the output's estimate. */
  private textLength = 0;
  private reported: Partial<Usage> = {};

  constructor(
    private readonly deps: ModelGatewayDeps,
    private readonly api: ModelApi,
    private operation: Operation,
    private readonly what: { provider: string; model: string; stream: boolean },
    private readonly promptTokens: bigint,
    reserved: bigint,
    private readonly auditOf: AuditOf,
  ) {
    this.charged = promptTokens + reserved;
  }

  async run(res: Response, url: string, headers: Record<string, string>, body: Json, principal: Principal): Promise<void> {
    const upstream = new AbortController();
    const revocation = this.deps.authority.revocationSignal(principal);
    const cut = (reason: unknown) => upstream.abort(reason);
    revocation.signal.addEventListener("abort", () => cut(revocation.signal.reason), { once: true });
    res.once("close", () => cut(new Error("the caller went away")));
    try {
      let answer: UpstreamAnswer;
      try {
        answer = await postUpstream(url, headers, JSON.stringify(body), upstream.signal);
      } catch (error) {
        await this.settle({ input: 0n, output: 0n }, { allowed: false, reason: "the provider could not be reached" });
        if (!res.headersSent && !res.writableEnded)
          sendJson(res, 502, this.api.errorBody("upstream", `amctl model gateway: the provider ${this.what.provider} could not be reached`));
        this.deps.log.warn({ err: error, provider: this.what.provider }, "model gateway: provider unreachable");
        return;
      }
      if (!this.what.stream || !answer.ok) return await this.whole(res, answer);
      await this.stream(res, answer, upstream.signal);
    } finally {
      revocation.dispose();
    }
  }

  private async whole(res: Response, answer: UpstreamAnswer): Promise<void> {
    const bytes = await answer.bytes();
    if (answer.ok) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(bytes.toString("utf8"));
      } catch {
        parsed = undefined;
      }
      this.reported = this.api.responseUsage(parsed) ?? {};
      this.textLength = textLength(bytes, this.api.textKeys);
    }
    await this.settle(
      answer.ok ? undefined : { input: 0n, output: 0n },
      answer.ok ? undefined : { allowed: false, reason: `the provider answered ${answer.status}` },
    );
    res.writeHead(answer.status, { "content-type": answer.contentType ?? "application/json" });
    res.end(bytes);
  }

  private async stream(res: Response, answer: UpstreamAnswer, signal: AbortSignal): Promise<void> {
    res.writeHead(answer.status, { "content-type": answer.contentType ?? "text/event-stream", "cache-control": "no-cache" });
    const { framing, textKeys, usageKey } = this.api;
    const pump = new EventPump(answer.body, framing);
    let ended: { kind: ErrorKind; message: string; decision: AuditDecisionInit } | undefined;
    try {
      for (let run = await pump.next(); run !== undefined; run = await pump.next()) {
        // All that arrived while the last was charged and forwarded, charged before any of it
        // is forwarded. A charge reserves ahead twice what the stream will have forwarded (up to
        // MAX_TOKENS_AHEAD, and only below the budget's warning line: chargeTokensAhead), so a
        // long stream costs a few store commits, not one per read, and never overspends.
        const length = this.textLength + textLength(run, textKeys);
        for (const event of eventsWith(run, usageKey, framing)) this.reported = { ...this.reported, ...this.api.eventUsage(event) };
        const need = this.promptTokens + estimateTokens(length) - this.charged;
        if (need > 0n) {
          const ahead = 2n * estimateTokens(length);
          const charged = await chargeTokensAhead(this.deps, this.operation, need, ahead < MAX_TOKENS_AHEAD ? ahead : MAX_TOKENS_AHEAD);
          if (charged === undefined) {
            ended = {
              kind: "budget",
              message: "amctl model gateway: the tokens budget is exhausted; the task is ended",
              decision: { allowed: false, reason: "tokens budget exhausted mid-stream" },
            };
            break;
          }
          this.charged += charged;
        }
        this.textLength = length;
        const drained = res.write(run);
        // A caller slower than the provider holds the provider back rather than the server's memory.
        if (!drained && !res.writableEnded) await once(res, "drain", { signal });
      }
      if (ended === undefined && pump.failure !== undefined) throw pump.failure;
    } catch (error) {
      const reason = signal.aborted ? signal.reason : error;
      const message = reason instanceof ConnectError ? reason.rawMessage : reason instanceof Error ? reason.message : "the stream failed";
      ended = { kind: "permission", message: `amctl model gateway: ${message}`, decision: { allowed: false, reason: message } };
    } finally {
      await pump.cancel();
    }
    if (ended !== undefined && !res.writableEnded) res.write(this.api.streamError(ended.kind, ended.message, ended.kind === "budget" ? "tokens" : undefined));
    // Settled before the stream ends, so the caller that sees its end sees the final charge. A
    // stream cut at the budget is held to what it forwarded (and gets back what it reserved);
    // any other end settles to what the provider reported.
    const forwarded = ended?.kind === "budget" ? { input: this.promptTokens, output: estimateTokens(this.textLength) } : undefined;
    await this.settle(forwarded, ended?.decision);
    res.end();
  }

  /**
   * Settles the tokens charged to what was used — reported, else estimated — and audits the
   * call with the settlement. `used`: what the call is held to instead (nothing for a provider's
   * error; what was forwarded for a stream cut at the budget).
   */
  private async settle(used?: Usage, decision?: AuditDecisionInit): Promise<void> {
    const reported = this.reported.input !== undefined && this.reported.output !== undefined;
    const usage: Usage = used ?? { input: this.reported.input ?? this.promptTokens, output: this.reported.output ?? estimateTokens(this.textLength) };
    const total = usage.input + usage.output;
    const audit = this.auditOf(usage, used === undefined ? !reported : used.input + used.output > 0n, decision);
    try {
      await settleCall(
        this.deps,
        this.operation,
        create(BudgetSchema, { tokens: total > this.charged ? total - this.charged : 0n }),
        create(BudgetSchema, { tokens: this.charged > total ? this.charged - total : 0n }),
        true,
        audit,
      );
    } catch (error) {
      // The task ended while the call was in flight (cut, cancelled, revoked): nothing more is charged.
      if (!(error instanceof ConnectError)) throw error;
      if (audit !== undefined) await this.deps.store.appendAudit(audit);
    }
  }
}
