// RPC metrics named and labelled as go-grpc-middleware's Prometheus provider
// (providers/prometheus) names them, so that dashboards and alerts written for gRPC servers in Go
// work unchanged: grpc_type is unary, client_stream, server_stream or bidi_stream; grpc_code is
// the code as Go spells it (OK, InvalidArgument, …), which is Connect's Code name.
//
// Counted by an interceptor, so a call is counted once it reaches a method: like grpc-go, whose
// interceptors never see a call to a method it does not serve or a request it cannot decode,
// calls refused before that (no such method, a unary body that does not parse or is too large,
// a content type no protocol takes) are not in these series. That also bounds the label sets:
// grpc_service and grpc_method are always a served method's, never a path a caller made up.
//
// Messages: a unary call receives one, and sends one when it succeeds; a stream's are counted as
// they are read and yielded. A stream is handled when it ends: OK when it finished, the code of
// the error it ended with, or — when its call was aborted first (the client went away, or the
// server cut a slow subscriber off) — the code of the abort (ResourceExhausted for a cut-off
// HTTP/2 stream), Canceled when it has none.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { Counter, Histogram, type Registry } from "prom-client";

const grpcTypes: Record<DescMethod["methodKind"], string> = {
  unary: "unary",
  client_streaming: "client_stream",
  server_streaming: "server_stream",
  bidi_streaming: "bidi_stream",
};

/** Prometheus's DefBuckets, go-grpc-middleware's default for the handling-time histogram. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type Labels = { grpc_type: string; grpc_service: string; grpc_method: string };

function codeOf(error: unknown): string {
  return Code[error instanceof ConnectError ? error.code : Code.Internal];
}

/** The code of a call that was aborted, or whose stream its transport stopped reading: Canceled unless the abort says otherwise. */
function abortCode(signal: AbortSignal): string {
  return signal.reason instanceof ConnectError ? Code[signal.reason.code] : Code[Code.Canceled];
}

class RpcMetrics {
  readonly started: Counter<keyof Labels>;
  readonly handled: Counter<keyof Labels | "grpc_code">;
  readonly received: Counter<keyof Labels>;
  readonly sent: Counter<keyof Labels>;
  readonly seconds: Histogram<keyof Labels>;

  constructor(registry: Registry) {
    const labelNames = ["grpc_type", "grpc_service", "grpc_method"] as const;
    const registers = [registry];
    this.started = new Counter({ name: "grpc_server_started_total", help: "Total number of RPCs started on the server.", labelNames, registers });
    this.handled = new Counter({
      name: "grpc_server_handled_total",
      help: "Total number of RPCs completed on the server, regardless of success or failure.",
      labelNames: [...labelNames, "grpc_code"],
      registers,
    });
    this.received = new Counter({
      name: "grpc_server_msg_received_total",
      help: "Total number of RPC stream messages received on the server.",
      labelNames,
      registers,
    });
    this.sent = new Counter({ name: "grpc_server_msg_sent_total", help: "Total number of gRPC stream messages sent by the server.", labelNames, registers });
    this.seconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      labelNames,
      buckets: DEFAULT_BUCKETS,
      registers,
    });
  }
}

/** Passes `messages` through, calling `each` for every one. */
async function* counting<T>(messages: AsyncIterable<T>, each: () => void): AsyncIterable<T> {
  for await (const message of messages) {
    each();
    yield message;
  }
}

/** The RPC metrics on `registry`, and the interceptor that counts them (outermost: it sees what the client gets). */
export function rpcMetricsInterceptor(registry: Registry): Interceptor {
  const metrics = new RpcMetrics(registry);
  return (next) => async (req) => {
    const labels: Labels = { grpc_type: grpcTypes[req.method.methodKind], grpc_service: req.service.typeName, grpc_method: req.method.name };
    const start = performance.now();
    const handled = (code: string): void => {
      metrics.handled.inc({ ...labels, grpc_code: code });
      metrics.seconds.observe(labels, (performance.now() - start) / 1000);
    };
    metrics.started.inc(labels);
    let res: UnaryResponse | StreamResponse;
    try {
      if (req.stream) {
        res = await next({ ...req, message: counting(req.message, () => metrics.received.inc(labels)) });
      } else {
        metrics.received.inc(labels);
        res = await next(req);
      }
    } catch (error) {
      handled(codeOf(error));
      throw error;
    }
    if (!res.stream) {
      metrics.sent.inc(labels);
      handled("OK");
      return res;
    }
    // A stream is handled at the first of its end and the abort of its call. The abort may be
    // all there is: connect-node never resumes nor closes a stream whose transport was closed
    // while a write waited for room (a slow subscriber cut off), as it waits for a 'drain' that
    // does not come.
    const messages = res.message;
    let ended = false;
    const end = (code: string): void => {
      if (ended) return;
      ended = true;
      req.signal.removeEventListener("abort", aborted);
      handled(code);
    };
    const aborted = (): void => end(abortCode(req.signal));
    if (req.signal.aborted) aborted();
    else req.signal.addEventListener("abort", aborted);
    return {
      ...res,
      message: (async function* () {
        try {
          yield* counting(messages, () => metrics.sent.inc(labels));
          end("OK");
        } catch (error) {
          end(codeOf(error));
          throw error;
        } finally {
          // The transport stopped reading it.
          end(abortCode(req.signal));
        }
      })(),
    };
  };
}
