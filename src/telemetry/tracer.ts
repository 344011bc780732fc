// The server's spans, through the OpenTelemetry API only. Until an SDK registers a tracer
// provider (amctl serve does when OTEL_EXPORTER_OTLP_ENDPOINT is set, see otlp-tracing.ts), the
// API is a no-op: each span is a non-recording object, carried in the process's async context
// (src/api/async-context.ts, which the server keeps anyway), so code here costs a few function
// calls and records nothing.
//
// Attributes follow the OpenTelemetry semantic conventions 1.45.0 where one applies; our own
// live under `agentmachine.`. Identifiers such as the operation's name are span attributes
// only: a span is one event, so they cost nothing in cardinality there (unlike metric labels).
import { INVALID_SPAN_CONTEXT, SpanStatusCode, TraceFlags, context, createContextKey, trace, type Attributes, type Span } from "@opentelemetry/api";
import { ATTR_ERROR_TYPE } from "@opentelemetry/semantic-conventions";
import { Code, ConnectError } from "@connectrpc/connect";

export const tracer = trace.getTracer("agent-machine-operation-plane");

/** Our span attributes (the rest come from @opentelemetry/semantic-conventions). */
export const ATTR_OPERATION_NAME = "agentmachine.operation.name";
export const ATTR_OPERATION_TYPE = "agentmachine.operation.type";

/** A status code as the Connect protocol spells it (`permission_denied`, `canceled`). */
export function connectCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** A status code as gRPC spells it (`PERMISSION_DENIED`, `CANCELLED`), which is how OpenTelemetry records it. */
export function grpcStatusName(code: Code): string {
  return code === Code.Canceled ? "CANCELLED" : connectCodeName(code).toUpperCase();
}

/**
 * Marks `span` as failed by `error`: `error.type` is the status code of a ConnectError (a
 * refusal: PERMISSION_DENIED, RESOURCE_EXHAUSTED…) or the class of anything else.
 */
export function recordFailure(span: Span, error: unknown): void {
  const type = error instanceof ConnectError ? grpcStatusName(error.code) : error instanceof Error ? error.constructor.name : "_OTHER";
  span.setAttribute(ATTR_ERROR_TYPE, type);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof ConnectError ? error.rawMessage : String(error) });
}

/**
 * Runs `body` in a new span, a child of the active one (and active itself while `body` runs,
 * so spans started inside nest below it). The span ends when `body` returns or its promise
 * settles; a throw or a rejection is recorded and passed on.
 */
export function inSpan<T>(name: string, attributes: Attributes, body: (span: Span) => T): T {
  return tracer.startActiveSpan(name, { attributes }, (span) => endingWith(span, body));
}

function endingWith<T>(span: Span, body: (span: Span) => T): T {
  let result: T;
  try {
    result = body(span);
  } catch (error) {
    endFailed(span, error);
    throw error;
  }
  if (!(result instanceof Promise)) {
    span.end();
    return result;
  }
  return result.then(
    (value: unknown) => {
      span.end();
      return value;
    },
    (error: unknown) => {
      endFailed(span, error);
      throw error;
    },
  ) as T;
}

function endFailed(span: Span, error: unknown): void {
  recordFailure(span, error);
  span.end();
}

/** What `inChildSpan` gives a body it runs without a span: attributes set on it go nowhere. */
const noSpan = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * A leaf span: a child of the active span, ended as inSpan's, but not made active itself, so it
 * is for work that starts no spans of its own (a store write, a policy decision). That saves
 * each such span a context and an async-context switch, a large part of a span's cost. Done
 * outside any traced work (a timer's, an egress connection's), `body` runs without a span, so
 * it does not start a trace of one span; so it does below a span whose context is not sampled
 * (one the sampler left out), since a leaf has no children to pass a context on to and the
 * sampler would not record it either. (Sampled, not recording: a write that a call started may
 * end after the call's span has, and is still its child.)
 */
export function inChildSpan<T>(name: string, attributes: Attributes, body: (span: Span) => T): T {
  const active = context.active();
  const parent = trace.getSpan(active);
  if (parent === undefined || (parent.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return body(noSpan);
  return endingWith(tracer.startSpan(name, { attributes }, active), body);
}

/** The span whose task runs in this context (runAsTask), which the task's own span is a child of. */
const taskOrigin = createContextKey("agentmachine.task-origin");

/**
 * Runs `body`, background work that the active span started and that may outlive it (an
 * operation's task, submitted by a call), with no active span: the task's own bookkeeping (the
 * commits that claim it and record its outcome) makes no spans, which would cost every traced
 * submit two more spans than the work it asks for. The span the task runs in (inTaskSpan) is
 * still a child of the span that started it, in its trace. Without an active span (a task taken
 * up after a restart), or inside a task already, `body` runs in the context as it is.
 */
export function runAsTask<T>(body: () => T): T {
  const active = context.active();
  const origin = trace.getSpan(active);
  if (origin === undefined) return body();
  return context.with(trace.deleteSpan(active).setValue(taskOrigin, origin), body);
}

/**
 * inSpan for the work of a task (runAsTask): a child of the span that started the task (or
 * of the active span, outside a task), and active while `body` runs, so what the work commits
 * nests below it.
 */
export function inTaskSpan<T>(name: string, attributes: Attributes, body: (span: Span) => T): T {
  const active = context.active();
  const origin = active.getValue(taskOrigin) as Span | undefined;
  const parent = origin === undefined ? active : trace.setSpan(active, origin);
  return tracer.startActiveSpan(name, { attributes }, parent, (span) => endingWith(span, body));
}

/** Names the operation a call concerns on the call's span (and on whatever span is active). */
export function noteOperation(name: string): void {
  trace.getActiveSpan()?.setAttribute(ATTR_OPERATION_NAME, name);
}
