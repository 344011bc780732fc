// Audit of every call (src/audit/). Before the call: its audit scope (src/call/audit-scope.ts)
// goes into the call's context values, from which a service makes the record of a command it
// carries out (auditDraft) and hands it to the store write that carries it out, so the record
// commits with the effect. After the call: a denied attempt at any RPC (PermissionDenied,
// Unauthenticated, ResourceExhausted) is appended as a denied record, then the caller gets the
// error. Runs outside authentication so that unauthenticated calls are seen too; who called is
// read after the call, from what authentication found (`anonymous` if nothing). Refusals of
// callers that were not authenticated carry the address they came from and go through the
// refusal summaries (src/audit/refusal-summaries.ts): a flood of them is summed, not recorded
// call by call. An authenticated caller's denial is always a record of its own.
import type { Message } from "@bufbuild/protobuf";
import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { commandOf, procedureOf } from "../audit/audited-commands.js";
import { deniedDecision } from "../audit/decisions.js";
import type { RefusalSummaries } from "../audit/refusal-summaries.js";
import { redactedRequestDigest } from "../audit/request-digest.js";
import type { StoreAudit } from "../store/store.js";
import { draftOf, setAuditScope, type AuditScope } from "../call/audit-scope.js";
import { authenticatedPrincipal } from "../call/principal.js";
import type { Logger } from "../api/logger.js";
import { sourceOf } from "./peer-address.js";

function resolve(scope: AuditScope, req: UnaryRequest | StreamRequest, message: Message): void {
  scope.command = commandOf(req.method, message);
  let digest: string | undefined;
  scope.requestDigest = () => (digest ??= redactedRequestDigest(req.method.input, message));
}

/**
 * The request with its message(s) where the scope can see them: a server-streaming call's one
 * message is read first (it is small and read before the handler runs anyway, and a denied call
 * must be recorded with its digest); a client or bidi stream's first message as it passes.
 */
async function observed(scope: AuditScope, req: UnaryRequest | StreamRequest): Promise<UnaryRequest | StreamRequest> {
  if (!req.stream) {
    resolve(scope, req, req.message);
    return req;
  }
  if (req.method.methodKind === "server_streaming") {
    const messages: Message[] = [];
    for await (const message of req.message) messages.push(message);
    const [first] = messages;
    if (first !== undefined) resolve(scope, req, first);
    return { ...req, message: createAsyncIterable(messages) };
  }
  const input = req.message;
  return {
    ...req,
    message: (async function* () {
      let first = true;
      for await (const message of input) {
        if (first) resolve(scope, req, message);
        first = false;
        yield message;
      }
    })(),
  };
}

async function* recordingDenial<T>(messages: AsyncIterable<T>, record: (error: unknown) => Promise<void>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    await record(error);
    throw error;
  }
}

/**
 * Records the denial of a call that failed with one (and nothing for other failures). Made by a
 * function, not as a named closure in the interceptor: a watch stream holds it for hours, and
 * under tsx each named closure made per call costs a property dictionary (see
 * src/lifecycle/subscription.ts's Subscriber).
 */
function denialRecorder(
  store: StoreAudit,
  refusals: RefusalSummaries,
  log: Logger,
  req: UnaryRequest | StreamRequest,
  scope: AuditScope,
): (error: unknown) => Promise<void> {
  return async (error) => {
    const decision = deniedDecision(error);
    if (decision === undefined) return;
    const principal = authenticatedPrincipal(req.contextValues);
    const draft = draftOf(scope, principal, "", decision);
    try {
      if (principal !== undefined) await store.appendAudit(draft);
      else await refusals.refused({ ...draft, sourceAddress: sourceOf(req.contextValues) ?? "" });
    } catch (appendError) {
      // The caller gets its denial either way; an operator must see that it went unrecorded.
      log.error({ err: appendError, rpc: scope.rpc }, "could not record a denied call in the audit log");
    }
  };
}

export function auditInterceptor(store: StoreAudit, refusals: RefusalSummaries, log: Logger): Interceptor {
  return (next) => async (req) => {
    const scope: AuditScope = { rpc: procedureOf(req.method), command: commandOf(req.method, undefined), requestDigest: () => "" };
    setAuditScope(req.contextValues, scope);
    const record = denialRecorder(store, refusals, log, req, scope);
    try {
      const res = await next(await observed(scope, req));
      return res.stream ? { ...res, message: recordingDenial(res.message, record) } : res;
    } catch (error) {
      await record(error);
      throw error;
    }
  };
}
