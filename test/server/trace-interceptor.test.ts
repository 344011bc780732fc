// The call's span, from the trace interceptor alone on a connect-node server (a router transport
// would not do: it never tells a handler that its client went away), with spans taken by an
// InMemorySpanExporter of a provider this file registers (and unregisters). The end-to-end test
// (test/e2e/traces.test.ts) covers the whole server and the exporter; this one the outcomes that
// are hard to cause there: a server-side failure, and a stream its client abandons.
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { SpanStatusCode, context, propagation, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { traceInterceptor } from "../../src/server/trace-interceptor.js";
import { connectCodeName, grpcStatusName, inSpan } from "../../src/telemetry/tracer.js";

const exporter = new InMemorySpanExporter();
let watchEnded: Promise<void>;
let server: Http2Server;
let connect: Client<typeof Health>;
let grpc: Client<typeof Health>;

const serving = create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING });

// Health, standing in for any service: `check` fails as its request's service name says,
// `watch` sends until its client goes away.
const handler = connectNodeAdapter({
  routes: (router) =>
    router.service(Health, {
      check({ service }) {
        return inSpan("work", {}, () => {
          if (service === "internal") throw new ConnectError("the disk is on fire", Code.Internal);
          if (service === "denied") throw new ConnectError("not yours", Code.PermissionDenied);
          return serving;
        });
      },
      async *watch() {
        let ended!: () => void;
        watchEnded = new Promise((resolve) => (ended = resolve));
        try {
          for (;;) {
            yield serving;
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        } finally {
          ended();
        }
      },
      list: () => ({ statuses: {} }),
    }),
  interceptors: [traceInterceptor()],
});

beforeAll(async () => {
  new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).register();
  server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  connect = createClient(Health, createConnectTransport({ baseUrl, httpVersion: "2" }));
  grpc = createClient(Health, createGrpcTransport({ baseUrl }));
});
afterEach(() => exporter.reset());
afterAll(() => {
  // The clients' sessions stay open; closing stops the listener, and they end with the process.
  server.close();
  trace.disable();
  context.disable();
  propagation.disable();
});

function callSpan() {
  const [span] = exporter.getFinishedSpans().filter((span) => span.name.startsWith("grpc.health.v1.Health/"));
  return span!;
}

describe("the call's span", () => {
  it("is a parent of what the handler does, and has no error on success", async () => {
    await connect.check({ service: "" });
    const call = callSpan();
    const work = exporter.getFinishedSpans().find((span) => span.name === "work")!;
    expect(work.parentSpanContext?.spanId).toBe(call.spanContext().spanId);
    expect(call.attributes).toMatchObject({ "rpc.system.name": "connectrpc", "rpc.method": "grpc.health.v1.Health/Check" });
    // A successful Connect call has no error code.
    expect(call.attributes["rpc.status_code"]).toBeUndefined();
    expect(call.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("is an error with error.type on a server-side failure, and not on the caller's", async () => {
    await expect(connect.check({ service: "internal" })).rejects.toThrow("the disk is on fire");
    expect(callSpan().attributes).toMatchObject({ "rpc.status_code": "internal", "error.type": "internal" });
    expect(callSpan().status).toEqual({ code: SpanStatusCode.ERROR, message: "the disk is on fire" });
    exporter.reset();
    await expect(connect.check({ service: "denied" })).rejects.toThrow("not yours");
    expect(callSpan().attributes["rpc.status_code"]).toBe("permission_denied");
    expect(callSpan().attributes["error.type"]).toBeUndefined();
    expect(callSpan().status.code).toBe(SpanStatusCode.UNSET);
    // The handler's own span records the refusal as its error.
    const work = exporter.getFinishedSpans().find((span) => span.name === "work")!;
    expect(work.attributes["error.type"]).toBe("PERMISSION_DENIED");
    expect(work.status.code).toBe(SpanStatusCode.ERROR);
  });

  it("of a stream ends when its client goes away, as CANCELLED, and the handler's stream is closed", async () => {
    const abort = new AbortController();
    let received = 0;
    await expect(
      (async () => {
        for await (const _ of grpc.watch({ service: "" }, { signal: abort.signal })) {
          received += 1;
          if (received === 3) abort.abort();
        }
      })(),
    ).rejects.toThrow();
    await watchEnded;
    await expect.poll(() => exporter.getFinishedSpans().length).toBe(1);
    expect(callSpan().name).toBe("grpc.health.v1.Health/Watch");
    expect(callSpan().attributes).toMatchObject({ "rpc.system.name": "grpc", "rpc.status_code": "CANCELLED" });
    expect(callSpan().status.code).toBe(SpanStatusCode.UNSET);
  });
});

describe("status code names", () => {
  it.each([
    [Code.Canceled, "CANCELLED", "canceled"],
    [Code.PermissionDenied, "PERMISSION_DENIED", "permission_denied"],
    [Code.DeadlineExceeded, "DEADLINE_EXCEEDED", "deadline_exceeded"],
    [Code.Unauthenticated, "UNAUTHENTICATED", "unauthenticated"],
    [Code.DataLoss, "DATA_LOSS", "data_loss"],
  ])("%s is %s in gRPC and %s in Connect", (code, grpc, connect) => {
    expect(grpcStatusName(code)).toBe(grpc);
    expect(connectCodeName(code)).toBe(connect);
  });
});
