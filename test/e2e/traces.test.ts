// Traces end to end: `amctl serve` as a real process with OTEL_EXPORTER_OTLP_ENDPOINT pointing at
// an OTLP/HTTP receiver in this test, which decodes the protobuf the SDK sends. This covers what
// an operator relies on — the environment starts the export, the exporter's wire format, W3C
// trace context from real request headers, spans that outlive their call (the executor) — where
// an in-process exporter would only show that spans are made. Without the variable, nothing is
// started: checked in this process, against a server here, through the same global API.
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { trace } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { createLogger } from "../../src/api/logger.js";
import { startTracing } from "../../src/telemetry/otlp-tracing.js";
import { clientFor } from "../helpers/clients.js";
import { createProfile, execution, operationsClient, requestId, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../helpers/otlp-receiver.js";
import { startChildServer, startTestServer, type ChildServer } from "../helpers/server.js";

const SUBMIT = "agentmachine.v1.OperationService/SubmitOperation";
const SERVER = 2;
const INTERNAL = 1;
const STATUS_ERROR = 2;

/** A caller's span context, as a W3C traceparent (sampled). */
function callerSpan(): { traceId: string; spanId: string; traceparent: string } {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

function only(spans: ReceivedSpan[], matches: (span: ReceivedSpan) => boolean, what: string): ReceivedSpan {
  const found = spans.filter(matches);
  if (found.length !== 1) throw new Error(`expected one ${what}, found ${found.length}: ${found.map((span) => span.name).join(", ")}`);
  return found[0]!;
}

const inTrace = (receiver: OtlpReceiver, traceId: string) => receiver.spans.filter((span) => span.traceId === traceId);
const childrenOf = (spans: ReceivedSpan[], parent: ReceivedSpan) => spans.filter((span) => span.parentSpanId === parent.spanId);

describe("with OTEL_EXPORTER_OTLP_ENDPOINT, amctl serve exports spans over OTLP/HTTP protobuf", () => {
  let receiver: OtlpReceiver;
  let server: ChildServer;
  let client: OperationsClient;
  let profile: string;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    // Batches go out every 100 ms rather than every 5 s. One execution at a time: a queued one
    // starts when another ends.
    server = await startChildServer(["--max-concurrent-executions", "1", "--log-level", "debug"], {
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100" },
    });
    client = operationsClient(server.url);
    profile = await createProfile(client, "traced");
  });
  afterAll(async () => {
    server?.child.kill("SIGTERM");
    await server?.exited;
    await receiver?.close();
  });

  it("a submit's span continues the caller's traceparent, with admission, policy and the store commit below it and the executor's span after it", async () => {
    const caller = callerSpan();
    const { operation } = await client.submitOperation(
      { requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } },
      { headers: { traceparent: caller.traceparent } },
    );
    const name = operation!.name;
    await waitForEnd(client, name);
    // Spans are exported in the order they end: once a call made after the task ended has
    // arrived, every span of the task would have.
    const marker = callerSpan();
    await client.getOperation({ name }, { headers: { traceparent: marker.traceparent } });
    await receiver.waitFor(() => inTrace(receiver, marker.traceId).length > 0);
    const spans = inTrace(receiver, caller.traceId);

    const call = only(spans, (span) => span.name === SUBMIT, "SubmitOperation span");
    expect(call).toMatchObject({ kind: SERVER, parentSpanId: caller.spanId, status: { code: 0 } });
    expect(call.attributes).toMatchObject({
      "rpc.system.name": "grpc",
      "rpc.method": SUBMIT,
      "rpc.status_code": "OK",
      "network.peer.address": "127.0.0.1",
      "agentmachine.operation.name": name,
    });
    expect(call.resource["service.name"]).toBe("amctl");

    const admission = only(childrenOf(spans, call), (span) => span.name === "admission", "admission span");
    expect(admission).toMatchObject({
      kind: INTERNAL,
      attributes: { "agentmachine.operation.name": name, "agentmachine.operation.type": "agent_machine.tool_grant.apply" },
    });
    const policy = only(childrenOf(spans, admission), (span) => span.name === "policy.evaluate", "policy span");
    expect(policy.attributes).toMatchObject({ "agentmachine.policy.gate": "toolGrant", "agentmachine.policy.allowed": true });
    expect(policy.attributes["agentmachine.policy.rule"]).toEqual(expect.any(String));
    expect(policy.attributes["agentmachine.policy.bundle_digest"]).toMatch(/^[0-9a-f]{64}$/);
    const commit = only(childrenOf(spans, call), (span) => span.name === "store.createOperation", "store commit span");
    expect(commit.attributes).toMatchObject({ "db.system.name": "sqlite" });

    // The task runs after the answer, in the submit's trace: claimed, run, completed.
    const executor = only(childrenOf(spans, call), (span) => span.name === "executor.run", "executor span");
    expect(executor.attributes).toMatchObject({
      "agentmachine.operation.name": name,
      "agentmachine.operation.type": "agent_machine.tool_grant.apply",
      "agentmachine.execution.attempt": 1,
      "agentmachine.execution.outcome": "completed",
    });
    // Every span of the trace is one of these: nothing of other calls or background work, nor
    // the task's own commits (its claim and its completion), which would be two spans more.
    expect(spans.map((span) => span.name).sort()).toEqual(["admission", "executor.run", "policy.evaluate", "store.createOperation", SUBMIT].sort());
  });

  it("an execution's attempt is an executor span in its submit's trace, named after the operation", async () => {
    const caller = callerSpan();
    const { operation } = await client.submitOperation(execution(profile, ["true"]), { headers: { traceparent: caller.traceparent } });
    const name = operation!.name;
    await waitForEnd(client, name);
    await receiver.waitFor(() => inTrace(receiver, caller.traceId).some((span) => span.name === "executor.run"));
    const spans = inTrace(receiver, caller.traceId);
    const call = only(spans, (span) => span.name === SUBMIT, "SubmitOperation span");
    const executor = only(childrenOf(spans, call), (span) => span.name === "executor.run", "executor span");
    expect(executor).toMatchObject({
      kind: INTERNAL,
      status: { code: 0 },
      attributes: {
        "agentmachine.operation.name": name,
        "agentmachine.operation.type": "agent_machine.execution.start",
        "agentmachine.execution.outcome": "completed",
      },
    });
    // No gate concerns an execution without network: admission evaluates none.
    const admission = only(childrenOf(spans, call), (span) => span.name === "admission", "admission span");
    expect(childrenOf(spans, admission)).toEqual([]);
  });

  it("an execution that waited for a slot runs in its own submit's trace, not in that of the execution that freed the slot", async () => {
    const first = callerSpan();
    const second = callerSpan();
    const { operation: running } = await client.submitOperation(execution(profile, ["sleep", "1"]), { headers: { traceparent: first.traceparent } });
    const { operation: queued } = await client.submitOperation(execution(profile, ["true"]), { headers: { traceparent: second.traceparent } });
    await waitForEnd(client, running!.name);
    await waitForEnd(client, queued!.name);
    await receiver.waitFor(() => [first, second].every(({ traceId }) => inTrace(receiver, traceId).some((span) => span.name === "executor.run")));
    for (const [caller, operation] of [
      [first, running!],
      [second, queued!],
    ] as const) {
      const spans = inTrace(receiver, caller.traceId);
      const call = only(spans, (span) => span.name === SUBMIT, "SubmitOperation span");
      const executor = only(spans, (span) => span.name === "executor.run", "executor span");
      expect(executor.parentSpanId).toBe(call.spanId);
      expect(executor.attributes["agentmachine.operation.name"]).toBe(operation.name);
    }
  });

  /** Submits an execution in `missing`, a profile that does not exist, and waits for its refused call's span; returns the trace's id. */
  async function refusedSubmit(missing: string): Promise<string> {
    const caller = callerSpan();
    const refused = await client.submitOperation(execution(missing, ["true"]), { headers: { traceparent: caller.traceparent } }).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(refused?.code).toBe(Code.FailedPrecondition);
    await receiver.waitFor(() => inTrace(receiver, caller.traceId).some((span) => span.name === SUBMIT));
    return caller.traceId;
  }

  it("a refusal is the caller's error: the call's span records its code without an error status, admission records why", async () => {
    const spans = inTrace(receiver, await refusedSubmit("profiles/none"));
    const call = only(spans, (span) => span.name === SUBMIT, "SubmitOperation span");
    expect(call.attributes["rpc.status_code"]).toBe("FAILED_PRECONDITION");
    expect(call.attributes["error.type"]).toBeUndefined();
    expect(call.status.code).toBe(0);
    const admission = only(childrenOf(spans, call), (span) => span.name === "admission", "admission span");
    expect(admission.status).toMatchObject({ code: STATUS_ERROR, message: expect.stringContaining("profiles/none") });
    expect(admission.attributes["error.type"]).toBe("FAILED_PRECONDITION");
    expect(spans.some((span) => span.name.startsWith("store."))).toBe(false);
  });

  it("a traced call's log lines still name the profiles it concerns: the trace and the call's record share one async context", async () => {
    await refusedSubmit("profiles/untold");
    const failed = server
      .stderr()
      .split("\n")
      .filter((line) => line.includes('"msg":"rpc failed"') && line.includes("profiles/untold"))
      .map((line) => JSON.parse(line) as { profiles?: string[] });
    expect(failed).toEqual([expect.objectContaining({ profiles: ["profiles/untold"] })]);
  });

  it("a Connect call is rpc.system.name connectrpc, with no status code when it succeeds; a call without traceparent starts a trace", async () => {
    const connect = clientFor(OperationService, server.url, { protocol: "connect" });
    const { operations } = await connect.listOperations({ pageSize: 1 });
    const method = "agentmachine.v1.OperationService/ListOperations";
    const [span] = await receiver.waitFor((spans) => spans.some((span) => span.name === method)).then((spans) => spans.filter((span) => span.name === method));
    expect(operations.length).toBe(1);
    expect(span!.parentSpanId).toBe("");
    expect(span!.attributes["rpc.system.name"]).toBe("connectrpc");
    expect(span!.attributes["rpc.status_code"]).toBeUndefined();
  });

  it("a stream's span lasts until its end, and names the operation it watches", async () => {
    const { operation } = await client.submitOperation({
      requestId: requestId(),
      profile,
      spec: { kind: { case: "toolGrantApply", value: { tool: "make" } } },
    });
    await waitForEnd(client, operation!.name);
    const method = "agentmachine.v1.OperationService/WatchOperation";
    const spans = await receiver.waitFor((received) =>
      received.some((span) => span.name === method && span.attributes["agentmachine.operation.name"] === operation!.name),
    );
    const watch = only(spans, (span) => span.name === method && span.attributes["agentmachine.operation.name"] === operation!.name, "WatchOperation span");
    expect(watch.attributes["rpc.status_code"]).toBe("OK");
  });
});

describe("without OTEL_EXPORTER_OTLP_ENDPOINT", () => {
  it("nothing is started, so the server's spans stay the API's no-op: none is recorded", async () => {
    const lines: string[] = [];
    const log = createLogger(
      "info",
      new Writable({
        write: (chunk: Buffer, _encoding, done) => {
          lines.push(chunk.toString("utf8"));
          done();
        },
      }),
    );
    expect(startTracing({}, log)).toBeUndefined();
    expect(startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1", OTEL_SDK_DISABLED: "true" }, log)).toBeUndefined();
    expect(lines).toEqual([]);
    // A protocol the server cannot speak is said, not silently sent to the wrong port.
    expect(startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, log)).toBeUndefined();
    expect(lines.join("")).toContain("only the OTLP protocol http/protobuf is supported");
    const server = await startTestServer();
    try {
      const client = operationsClient(server.url);
      const caller = callerSpan();
      const profile = await createProfile(client, "untraced");
      const { operation } = await client.submitOperation(execution(profile, ["true"]), { headers: { traceparent: caller.traceparent } });
      await waitForEnd(client, operation!.name);
    } finally {
      await server.close();
    }
    // The server took its tracer from this global API: with no provider registered, every span
    // it started was a non-recording one.
    const span = trace.getTracer("agent-machine-operation-plane").startSpan("probe");
    expect(span.isRecording()).toBe(false);
  });
});
