// The span of each call, as the OpenTelemetry semantic conventions 1.45.0 describe an RPC
// server span (rpc/grpc.md, rpc/connect-rpc.md): named after the fully qualified method, kind
// SERVER, a child of the caller's span when the request carries a W3C `traceparent`. The
// call's handler runs with it as the active span, so the spans of admission, policy, store
// commits and executors nest below it.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { SpanKind, SpanStatusCode, context, propagation, trace, type Context, type Span, type TextMapGetter } from "@opentelemetry/api";
import {
  ATTR_ERROR_TYPE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_RPC_METHOD,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  RPC_SYSTEM_NAME_VALUE_GRPC,
} from "@opentelemetry/semantic-conventions";
import { connectCodeName, grpcStatusName, tracer } from "../telemetry/tracer.js";
import { peerAddressOf } from "./peer-address.js";

/** `rpc.system.name` of a Connect protocol call; still "Development" in the conventions, so not exported as stable. */
const RPC_SYSTEM_NAME_VALUE_CONNECTRPC = "connectrpc";

/** Server-side failures: the codes the conventions count as errors of a server span (the others are the caller's). */
const serverErrors: ReadonlySet<Code> = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

/** gRPC and gRPC-Web calls are "grpc"; the rest (Connect's unary and streaming protocols) "connectrpc". */
function rpcSystem(headers: Headers): string {
  return headers.get("content-type")?.startsWith("application/grpc") ? RPC_SYSTEM_NAME_VALUE_GRPC : RPC_SYSTEM_NAME_VALUE_CONNECTRPC;
}

/**
 * `rpc.status_code` as each system spells it: gRPC's name (`OK`, `PERMISSION_DENIED`); Connect's
 * error code (`permission_denied`), which a successful Connect call does not have.
 */
function statusCode(system: string, code: Code | undefined): string | undefined {
  if (system === RPC_SYSTEM_NAME_VALUE_GRPC) return code === undefined ? "OK" : grpcStatusName(code);
  return code === undefined ? undefined : connectCodeName(code);
}

/** What a call ended with: no code for success. */
interface Outcome {
  code?: Code;
  message?: string;
}

function outcomeOf(error: unknown): Outcome {
  // The error interceptor, inside this one, has made every error a ConnectError already.
  return error instanceof ConnectError ? { code: error.code, message: error.rawMessage } : { code: Code.Internal };
}

function endCall(span: Span, system: string, { code, message }: Outcome): void {
  const status = statusCode(system, code);
  if (status !== undefined) span.setAttribute(ATTR_RPC_STATUS_CODE, status);
  if (code !== undefined && serverErrors.has(code)) {
    span.setAttribute(ATTR_ERROR_TYPE, status!);
    span.setStatus({ code: SpanStatusCode.ERROR, ...(message !== undefined ? { message } : {}) });
  }
  span.end();
}

/**
 * A streaming response whose every step runs with the call's span active (the handler runs as
 * the transport pulls, outside the interceptor) and passes through unchanged: the transport's
 * `throw` and `return` when the client goes away reach the handler as they would without this.
 * The span ends with the stream: when it is done, with the handler's error, or with the
 * transport's (CANCELLED for a client that went away). A class, not closures: a watch stream
 * holds it for hours, and its methods are made once for every call (see subscription.ts's
 * Subscriber for what a closure per call costs).
 */
class StreamInContext<T> implements AsyncIterator<T>, AsyncIterable<T> {
  private ended = false;
  private readonly inner: AsyncIterator<T>;

  constructor(
    messages: AsyncIterable<T>,
    private readonly active: Context,
    private readonly span: Span,
    private readonly system: string,
  ) {
    this.inner = messages[Symbol.asyncIterator]();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    return this.step(() => this.inner.next());
  }

  throw(reason?: unknown): Promise<IteratorResult<T>> {
    return this.step(
      () => (this.inner.throw !== undefined ? this.inner.throw(reason) : Promise.reject(reason)),
      reason instanceof ConnectError ? outcomeOf(reason) : { code: Code.Canceled },
    );
  }

  return(value?: unknown): Promise<IteratorResult<T>> {
    return this.step(() => (this.inner.return !== undefined ? this.inner.return(value) : Promise.resolve({ done: true, value })), {
      code: Code.Canceled,
    });
  }

  private end(outcome: Outcome): void {
    if (this.ended) return;
    this.ended = true;
    endCall(this.span, this.system, outcome);
  }

  private async step(move: () => Promise<IteratorResult<T>>, stopped?: Outcome): Promise<IteratorResult<T>> {
    if (stopped !== undefined) this.end(stopped);
    try {
      const result = await context.with(this.active, move);
      if (result.done === true) this.end({});
      return result;
    } catch (error) {
      this.end(outcomeOf(error));
      throw error;
    }
  }
}

/** The call's span; outside the error interceptor, so it records the code the client gets. */
export function traceInterceptor(): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const system = rpcSystem(req.header);
    // On the active context, not an empty one: it holds the call's own values (the profiles it concerns).
    const parent = propagation.extract(context.active(), req.header, headerGetter);
    const span = tracer.startSpan(method, { kind: SpanKind.SERVER, attributes: { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: method } }, parent);
    // Who called, only worked out for a span that is recorded. (server.address and server.port,
    // merely recommended, are left out: the same on every call, they would be bytes per span.)
    const peer = span.isRecording() ? peerAddressOf(req.contextValues) : undefined;
    if (peer !== undefined) span.setAttribute(ATTR_NETWORK_PEER_ADDRESS, peer);
    const active = trace.setSpan(parent, span);
    try {
      const res = await context.with(active, () => next(req));
      if (!res.stream) {
        endCall(span, system, {});
        return res;
      }
      return { ...res, message: new StreamInContext(res.message, active, span, system) };
    } catch (error) {
      endCall(span, system, outcomeOf(error));
      throw error;
    }
  };
}
