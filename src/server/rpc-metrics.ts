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
import { Histogram, type Registry } from "prom-client";
import { CountingFrameSink, frameSinkKey } from "../call/frame-sink.js";
import { TalliedCounter, type Tally } from "../metrics/tallied-counter.js";

const grpcTypes: Record<DescMethod["methodKind"], string> = {
  unary: "unary",
  client_streaming: "client_stream",
  server_streaming: "server_stream",
  bidi_streaming: "bidi_stream",
};

/** Prometheus's DefBuckets, go-grpc-middleware's default for the handling-time histogram. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type LabelName = "grpc_type" | "grpc_service" | "grpc_method";

function codeOf(error: unknown): string {
  return Code[error instanceof ConnectError ? error.code : Code.Internal];
}

/** The code of a call that was aborted, or whose stream its transport stopped reading: Canceled unless the abort says otherwise. */
function abortCode(signal: AbortSignal): string {
  return signal.reason instanceof ConnectError ? Code[signal.reason.code] : Code[Code.Canceled];
}

/** One method's series, looked up once per method rather than by label values on every call. */
interface MethodSeries {
  labels: Record<LabelName, string>;
  started: Tally;
  received: Tally;
  sent: Tally;
  seconds: { observe(seconds: number): void };
  /** The handled series of each code the method has ended with so far. */
  handled: Map<string, Tally>;
}

class RpcMetrics {
  private readonly started: TalliedCounter<LabelName>;
  private readonly handled: TalliedCounter<LabelName | "grpc_code">;
  private readonly received: TalliedCounter<LabelName>;
  private readonly sent: TalliedCounter<LabelName>;
  private readonly seconds: Histogram<LabelName>;
  private readonly methods = new Map<DescMethod, MethodSeries>();

  constructor(registry: Registry) {
    const labelNames = ["grpc_type", "grpc_service", "grpc_method"] as const;
    const registers = [registry];
    this.started = new TalliedCounter({ name: "grpc_server_started_total", help: "Total number of RPCs started on the server.", labelNames, registers });
    this.handled = new TalliedCounter({
      name: "grpc_server_handled_total",
      help: "Total number of RPCs completed on the server, regardless of success or failure.",
      labelNames: [...labelNames, "grpc_code"],
      registers,
    });
    this.received = new TalliedCounter({
      name: "grpc_server_msg_received_total",
      help: "Total number of RPC stream messages received on the server.",
      labelNames,
      registers,
    });
    this.sent = new TalliedCounter({
      name: "grpc_server_msg_sent_total",
      help: "Total number of gRPC stream messages sent by the server.",
      labelNames,
      registers,
    });
    this.seconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      labelNames,
      buckets: DEFAULT_BUCKETS,
      registers,
    });
  }

  /** The series of `method` (a served method's: the label sets stay bounded). */
  of(method: DescMethod): MethodSeries {
    let series = this.methods.get(method);
    if (series === undefined) {
      const labels = { grpc_type: grpcTypes[method.methodKind], grpc_service: method.parent.typeName, grpc_method: method.name };
      series = {
        labels,
        started: this.started.tally(labels),
        received: this.received.tally(labels),
        sent: this.sent.tally(labels),
        seconds: this.seconds.labels(labels),
        handled: new Map(),
      };
      this.methods.set(method, series);
    }
    return series;
  }

  /** Counts a call handled with `code`, `start` (performance.now()) being when it started. */
  handle(series: MethodSeries, code: string, start: number): void {
    let handled = series.handled.get(code);
    if (handled === undefined) {
      handled = this.handled.tally({ ...series.labels, grpc_code: code });
      series.handled.set(code, handled);
    }
    handled.value += 1;
    series.seconds.observe((performance.now() - start) / 1000);
  }
}

/** Passes `messages` through, calling `each` for every one. */
async function* counting<T>(messages: AsyncIterable<T>, each: () => void): AsyncIterable<T> {
  for await (const message of messages) {
    each();
    yield message;
  }
}

/**
 * A stream's end, counted once: at the first of its end and the abort of its call (it is its
 * signal's abort listener). A class, not closures made per call: a watch stream holds it for
 * hours (see src/lifecycle/subscription.ts's Subscriber for what a closure per call costs).
 */
class HandledStream {
  private ended = false;

  constructor(
    private readonly metrics: RpcMetrics,
    private readonly series: MethodSeries,
    private readonly start: number,
    private readonly signal: AbortSignal,
  ) {
    if (signal.aborted) this.handleEvent();
    else signal.addEventListener("abort", this);
  }

  end(code: string): void {
    if (this.ended) return;
    this.ended = true;
    this.signal.removeEventListener("abort", this);
    this.metrics.handle(this.series, code, this.start);
  }

  handleEvent(): void {
    this.end(abortCode(this.signal));
  }

  /** `messages`, each counted as sent; the stream is handled when they end. */
  async *pass<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
    try {
      yield* counting(messages, () => (this.series.sent.value += 1));
      this.end("OK");
    } catch (error) {
      this.end(codeOf(error));
      throw error;
    } finally {
      // The transport stopped reading it.
      this.end(abortCode(this.signal));
    }
  }
}

/** The RPC metrics on `registry`, and the interceptor that counts them (outermost: it sees what the client gets). */
export function rpcMetricsInterceptor(registry: Registry): Interceptor {
  const metrics = new RpcMetrics(registry);
  return (next) => async (req) => {
    const series = metrics.of(req.method);
    const start = performance.now();
    series.started.value += 1;
    let res: UnaryResponse | StreamResponse;
    try {
      if (req.stream) {
        // Live events the event hub writes straight to a lean watch stream are sent messages too.
        const sink = req.contextValues.get(frameSinkKey);
        if (sink !== undefined) req.contextValues.set(frameSinkKey, new CountingFrameSink(sink, (frames) => (series.sent.value += frames)));
        res = await next({ ...req, message: counting(req.message, () => (series.received.value += 1)) });
      } else {
        series.received.value += 1;
        res = await next(req);
      }
    } catch (error) {
      metrics.handle(series, codeOf(error), start);
      throw error;
    }
    if (!res.stream) {
      series.sent.value += 1;
      metrics.handle(series, "OK", start);
      return res;
    }
    // A stream is handled at the first of its end and the abort of its call. The abort may be
    // all there is: connect-node never resumes nor closes a stream whose transport was closed
    // while a write waited for room (a slow subscriber cut off), as it waits for a 'drain' that
    // does not come.
    return { ...res, message: new HandledStream(metrics, series, start, req.signal).pass(res.message) };
  };
}
