// The tracer's leaf spans (inChildSpan), with spans taken by an InMemorySpanExporter of a
// provider this file registers (and unregisters): recorded below a sampled span, never made
// active, and not even started below a span that is not sampled or outside any span.
import { INVALID_SPANID, TraceFlags, context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { inChildSpan, inSpan, inTaskSpan, runAsTask } from "../../src/telemetry/tracer.js";

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

  it("records below a sampled span that has ended, as a write a call started may end after the call's answer", () => {
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

describe("runAsTask and inTaskSpan", () => {
  const parentOf = (name: string) => exporter.getFinishedSpans().find((span) => span.name === name)?.parentSpanContext?.spanId;

  it("a task's own commits make no spans; its span is a child of the span that started it, and what it commits nests below that", async () => {
    const call = inSpan("call", {}, (span) => span);
    await context.with(trace.setSpan(context.active(), call), () =>
      runAsTask(async () => {
        inChildSpan("store.claimOperation", {}, () => undefined);
        await inTaskSpan("executor.run", {}, async () => {
          await Promise.resolve();
          inChildSpan("store.modifyOperation", {}, () => undefined);
        });
        inChildSpan("store.modifyOperation", {}, () => undefined);
      }),
    );
    expect(exporter.getFinishedSpans().map((span) => span.name)).toEqual(["call", "store.modifyOperation", "executor.run"]);
    expect(parentOf("executor.run")).toBe(call.spanContext().spanId);
    expect(parentOf("store.modifyOperation")).toBe(
      exporter
        .getFinishedSpans()
        .find((span) => span.name === "executor.run")!
        .spanContext().spanId,
    );
  });

  it("work queued from inside a task (a retry) runs again as a task of the same span", () => {
    const call = inSpan("call", {}, (span) => span);
    const queued = context.with(trace.setSpan(context.active(), call), () => runAsTask(() => context.active()));
    context.with(queued, () => runAsTask(() => inTaskSpan("executor.run", {}, () => undefined)));
    expect(parentOf("executor.run")).toBe(call.spanContext().spanId);
  });

  it("a task started outside any span (taken up after a restart) starts a trace of its own", () => {
    runAsTask(() => inTaskSpan("executor.run", {}, () => undefined));
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe("executor.run");
    expect(span?.parentSpanContext).toBeUndefined();
  });
});
