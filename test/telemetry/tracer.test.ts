// The tracer's leaf spans (inChildSpan), with spans taken by an InMemorySpanExporter of a
// provider this file registers (and unregisters): recorded below a sampled span, never made
// active, and not even started below a span that is not sampled or outside any span.
import { INVALID_SPANID, TraceFlags, context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { inChildSpan, inSpan } from "../../src/telemetry/tracer.js";

const exporter = new InMemorySpanExporter();

beforeAll(() => {
  new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).register();
});
afterEach(() => exporter.reset());
afterAll(() => {
  trace.disable();
  context.disable();
});

describe("inChildSpan", () => {
  it("records a child of the active span, which stays the active span while the body runs", () => {
    const active = inSpan("call", {}, (call) => inChildSpan("store.write", { "db.system.name": "sqlite" }, () => trace.getActiveSpan()) === call);
    expect(active).toBe(true);
    const [child, call] = exporter.getFinishedSpans();
    expect(child).toMatchObject({ name: "store.write", attributes: { "db.system.name": "sqlite" } });
    expect(child!.parentSpanContext?.spanId).toBe(call!.spanContext().spanId);
  });

  it("records below a sampled span that has ended, as a task's commits come after its call's answer", () => {
    const call = inSpan("call", {}, (span) => span);
    context.with(trace.setSpan(context.active(), call), () => inChildSpan("store.claimOperation", {}, () => undefined));
    const [, child] = exporter.getFinishedSpans();
    expect(child?.parentSpanContext?.spanId).toBe(call.spanContext().spanId);
  });

  it("starts no span below a span the sampler left out, nor outside any span", () => {
    const unsampled = trace.wrapSpanContext({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.NONE });
    const below = context.with(trace.setSpan(context.active(), unsampled), () => inChildSpan("store.write", {}, (span) => span.spanContext().spanId));
    const outside = inChildSpan("store.write", {}, (span) => span.spanContext().spanId);
    expect([below, outside]).toEqual([INVALID_SPANID, INVALID_SPANID]);
    expect(exporter.getFinishedSpans()).toEqual([]);
  });
});
