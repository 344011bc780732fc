// Metrics: the Prometheus text format at /metrics on a listener of its own (--metrics-listen),
// never on the API's port. A real server over real sockets takes real traffic — submits, refused
// calls, watch streams, an execution, a subscriber too slow to keep — and scrapes show that each
// counter moved as it should, exactly where the traffic is deterministic.
import * as http2 from "node:http2";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { eventTypeNames, operationTypeNames, taskStateNames } from "../../src/model/mapping.js";
import { gates } from "../../src/model/policy-gates.js";
import { servedServiceDescriptors } from "../../src/server/server.js";
import { storeWrites } from "../../src/store/store-writes.js";
import { createProfile, execution, operationsClient, requestId, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { bundleSource } from "../helpers/policy.js";
import { scrape, total, type Exposition } from "../helpers/prometheus.js";
import { stalledWatch } from "../helpers/raw-http2.js";
import { startChildServer, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

let server: TestServer;
let client: OperationsClient;
let profile: string;
let metricsUrl: string;

const PROFILE_ID = "metrics-watched";
const OPERATIONS = { grpc_service: "agentmachine.v1.OperationService" };
const SUBMIT = { ...OPERATIONS, grpc_method: "SubmitOperation", grpc_type: "unary" };
const WATCH_EVENTS = { ...OPERATIONS, grpc_method: "WatchEvents", grpc_type: "server_stream" };
const WATCH_OPERATION = { ...OPERATIONS, grpc_method: "WatchOperation", grpc_type: "server_stream" };

beforeAll(async () => {
  // Tool grants are allowed but one tool, so that a policy denial can be counted too.
  const policies = tempDir();
  writeFileSync(
    join(policies, "personal.yaml"),
    bundleSource("personal", [{ id: "metrics.all-but-forbidden", gate: "toolGrant", effect: "allow", when: 'input.tool != "forbidden"' }]),
  );
  server = await startTestServer({
    metricsListen: { host: "127.0.0.1", port: 0 },
    policyDir: policies,
    slowSubscriberTimeoutMs: 300,
    auditCheckpointIntervalMs: 200,
  });
  metricsUrl = server.metricsUrl!;
  client = operationsClient(server.url);
  profile = await createProfile(client, PROFILE_ID);
});
afterAll(() => server.close());

/** What moved between two scrapes. */
function deltas(before: Exposition, after: Exposition) {
  return (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal"),
      (e: unknown) => e,
    ),
  );
}

function grantTool(tool: string) {
  return client.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool } } } });
}

async function latestSequence(): Promise<bigint> {
  return (await server.store.eventBounds()).latest;
}

describe("where the metrics are", () => {
  it("on their own listener, logged in the serving line; the API's port serves no /metrics, the metrics port nothing else", async () => {
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(new URL(metricsUrl).port).not.toBe(String(server.port));
    expect(server.logs.find((line) => line.msg === "serving")?.metricsUrl).toBe(metricsUrl);
    for (const path of ["/metrics", "/metrics/", "/console/metrics"]) {
      const response = await fetch(new URL(path, server.url));
      expect(response.status, path).not.toBe(200);
      expect(await response.text(), path).not.toMatch(/grpc_server_|amctl_/);
    }
    expect((await fetch(new URL("/", metricsUrl))).status).toBe(404);
    expect((await fetch(metricsUrl, { method: "POST" })).status).toBe(405);
  });

  it("a server started without --metrics-listen serves none", async () => {
    const plain = await startTestServer();
    try {
      expect(plain.metricsUrl).toBeUndefined();
      expect(plain.logs.find((line) => line.msg === "serving")).not.toHaveProperty("metricsUrl");
      expect((await fetch(new URL("/metrics", plain.url))).status).toBe(404);
    } finally {
      await plain.close();
    }
  });

  it("amctl serve --metrics-listen HOST:PORT serves them (the address in its serving line), and refuses an address that is not HOST:PORT", async () => {
    const child = await startChildServer(["--metrics-listen", "127.0.0.1:0"]);
    try {
      const url = /"metricsUrl":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/.exec(child.stderr())?.[1];
      expect(url).toBeDefined();
      const exposition = await scrape(url!);
      expect(exposition.types.get("grpc_server_handled_total")).toBe("counter");
      expect(exposition.types.get("amctl_operations_active")).toBe("gauge");
    } finally {
      child.child.kill("SIGTERM");
      await child.exited;
    }
    await expect(startChildServer(["--metrics-listen", "9090"])).rejects.toThrow(/--metrics-listen must be HOST:PORT/);
  });
});

describe("RPC metrics, named as go-grpc-middleware names them", () => {
  it("unary calls: started, handled by code, messages and handling time move exactly; a path no method serves is not counted", async () => {
    const before = await scrape(metricsUrl);
    const granted = await Promise.all(["git", "rg", "jq"].map(grantTool));
    for (const { operation } of granted) await waitForEnd(client, operation!.name);
    expect((await refusal(grantTool("forbidden"))).code).toBe(Code.PermissionDenied);
    expect((await refusal(client.submitOperation({ requestId: requestId(), profile }))).code).toBe(Code.InvalidArgument);
    const anonymous = createClient(OperationService, createGrpcTransport({ baseUrl: server.url }));
    expect((await refusal(anonymous.submitOperation({ requestId: requestId(), profile }))).code).toBe(Code.Unauthenticated);
    const unknown = await fetch(new URL("/agentmachine.v1.OperationService/NoSuchMethod", server.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(unknown.status).toBe(404);
    const after = await scrape(metricsUrl);
    const delta = deltas(before, after);

    expect(delta("grpc_server_started_total", SUBMIT)).toBe(6);
    expect(delta("grpc_server_handled_total", { ...SUBMIT, grpc_code: "OK" })).toBe(3);
    expect(delta("grpc_server_handled_total", { ...SUBMIT, grpc_code: "PermissionDenied" })).toBe(1);
    expect(delta("grpc_server_handled_total", { ...SUBMIT, grpc_code: "InvalidArgument" })).toBe(1);
    expect(delta("grpc_server_handled_total", { ...SUBMIT, grpc_code: "Unauthenticated" })).toBe(1);
    expect(delta("grpc_server_handled_total", SUBMIT)).toBe(6);
    expect(delta("grpc_server_msg_received_total", SUBMIT)).toBe(6);
    expect(delta("grpc_server_msg_sent_total", SUBMIT)).toBe(3);
    expect(delta("grpc_server_handling_seconds_count", SUBMIT)).toBe(6);
    expect(delta("grpc_server_handling_seconds_bucket", { ...SUBMIT, le: "+Inf" })).toBe(6);
    // waitForEnd follows each grant with WatchOperation to its end, then reads it once.
    expect(delta("grpc_server_handled_total", { ...WATCH_OPERATION, grpc_code: "OK" })).toBe(3);
    expect(delta("grpc_server_handled_total", { ...OPERATIONS, grpc_method: "GetOperation", grpc_type: "unary", grpc_code: "OK" })).toBe(3);
    expect(after.samples.filter((sample) => JSON.stringify(sample.labels).includes("NoSuchMethod"))).toEqual([]);

    // The same traffic in the plane's own terms.
    const grants = { operation_type: "agent_machine.tool_grant.apply" };
    expect(delta("amctl_operation_state_changes_total", { ...grants, state: "queued" })).toBe(3);
    expect(delta("amctl_operation_state_changes_total", { ...grants, state: "completed" })).toBe(3);
    expect(delta("amctl_policy_decisions_total", { gate: "toolGrant", verdict: "allow" })).toBe(3);
    expect(delta("amctl_policy_decisions_total", { gate: "toolGrant", verdict: "deny" })).toBe(1);
    expect(delta("amctl_store_commit_duration_seconds_count", { method: "createOperation" })).toBe(3);
  });

  it("a watch stream is a subscriber while it is open, and handled as Canceled when its client leaves", async () => {
    const before = await scrape(metricsUrl);
    const abort = new AbortController();
    let received = 0;
    const watching = (async () => {
      for await (const { kind } of client.watchEvents({}, { signal: abort.signal })) if (kind.case === "event") received += 1;
    })().catch(() => undefined);
    await expect.poll(() => received).toBeGreaterThan(0);
    expect(total(await scrape(metricsUrl), "amctl_subscribers", { grpc_method: "WatchEvents" })).toBe(1);
    abort.abort();
    await watching;
    await expect.poll(async () => total(await scrape(metricsUrl), "amctl_subscribers", { grpc_method: "WatchEvents" })).toBe(0);
    const delta = deltas(before, await scrape(metricsUrl));
    expect(delta("grpc_server_started_total", WATCH_EVENTS)).toBe(1);
    expect(delta("grpc_server_msg_received_total", WATCH_EVENTS)).toBe(1);
    expect(delta("grpc_server_handled_total", { ...WATCH_EVENTS, grpc_code: "Canceled" })).toBe(1);
    expect(delta("grpc_server_handled_total", WATCH_EVENTS)).toBe(1);
    expect(delta("grpc_server_msg_sent_total", WATCH_EVENTS)).toBeGreaterThanOrEqual(received);
  });

  it("counts as sent the live events the event hub writes straight to a lean watch stream", async () => {
    const abort = new AbortController();
    let received = 0;
    const watching = (async () => {
      for await (const { kind } of client.watchEvents({ afterSequence: await latestSequence() }, { signal: abort.signal }))
        if (kind.case === "event") received += 1;
    })().catch(() => undefined);
    await expect.poll(async () => total(await scrape(metricsUrl), "amctl_subscribers", { grpc_method: "WatchEvents" })).toBe(1);
    const before = await scrape(metricsUrl);
    // Live events only (the stream began at the latest sequence): each tool grant is two.
    for (let n = 0; n < 5; n += 1) await waitForEnd(client, (await grantTool("git")).operation!.name);
    await expect.poll(() => received).toBeGreaterThanOrEqual(10);
    const sent = deltas(before, await scrape(metricsUrl))("grpc_server_msg_sent_total", WATCH_EVENTS);
    abort.abort();
    await watching;
    expect(sent).toBeGreaterThanOrEqual(received);
  });

  it("a subscriber that stops reading is cut off, counted as such, and handled as ResourceExhausted", async () => {
    const before = await scrape(metricsUrl);
    // A client with a 1 KiB flow-control window that never reads (as test/e2e/slow-subscriber.test.ts).
    const { session, reset } = stalledWatch(server.url, server.token);
    await Promise.all(Array.from({ length: 150 }, () => grantTool("git")));
    expect(await reset).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.close();
    await expect.poll(async () => total(await scrape(metricsUrl), "amctl_subscribers", { grpc_method: "WatchEvents" })).toBe(0);
    const delta = deltas(before, await scrape(metricsUrl));
    expect(delta("amctl_subscribers_cut_off_total", { grpc_method: "WatchEvents" })).toBe(1);
    expect(delta("grpc_server_handled_total", { ...WATCH_EVENTS, grpc_code: "ResourceExhausted" })).toBe(1);
  });
});

describe("the plane's own metrics", () => {
  it("an execution: running while it runs; then its state changes, events and settled budget", async () => {
    const before = await scrape(metricsUrl);
    const sequenceBefore = await latestSequence();
    const { operation } = await client.submitOperation(execution(profile, ["sleep", "1"]));
    await expect.poll(async () => total(await scrape(metricsUrl), "amctl_executions", { state: "running" }), { timeout: 10_000 }).toBe(1);
    const executions = { operation_type: "agent_machine.execution.start" };
    expect(total(await scrape(metricsUrl), "amctl_operations_active", { ...executions, state: "running" })).toBe(1);
    const { operation: ended } = await waitForEnd(client, operation!.name);
    expect(ended.state).toBe(TaskState.COMPLETED);
    const after = await scrape(metricsUrl);
    const delta = deltas(before, after);

    expect(total(after, "amctl_executions")).toBe(0);
    expect(total(after, "amctl_operations_active")).toBe(0);
    for (const state of ["queued", "running", "completed"]) expect(delta("amctl_operation_state_changes_total", { ...executions, state }), state).toBe(1);
    expect(delta("amctl_events_appended_total", { event_type: "start" })).toBe(1);
    expect(delta("amctl_events_appended_total", { event_type: "complete" })).toBe(1);
    // Every event appended meanwhile was this server's, and each is counted once.
    expect(delta("amctl_events_appended_total")).toBe(Number((await latestSequence()) - sequenceBefore));
    // What the execution spent, as its budget was settled.
    expect(ended.usage!.wallClockSeconds).toBeGreaterThan(0n);
    expect(delta("amctl_budget_consumed_wall_clock_seconds_total")).toBe(Number(ended.usage!.wallClockSeconds));
    expect(delta("amctl_budget_consumed_compute_seconds_total")).toBe(Number(ended.usage!.cpuGpuComputeSeconds));
    expect(delta("amctl_store_commit_duration_seconds_count", { method: "claimOperation" })).toBeGreaterThanOrEqual(1);
    expect(delta("amctl_sandbox_failures_total")).toBe(0);
  });

  it("audit records are the log's length, and checkpoints signed are counted", async () => {
    await expect.poll(async () => total(await scrape(metricsUrl), "amctl_audit_checkpoints_signed_total")).toBeGreaterThan(0);
    const exposition = await scrape(metricsUrl);
    const head = await server.store.auditHead();
    expect(head).toBeDefined();
    expect(total(exposition, "amctl_audit_records_total")).toBe(Number(head!.sequence));
  });

  it("the scrape parses, every series is declared, and no label value identifies anything", async () => {
    const exposition = await scrape(metricsUrl);
    const allowed: Record<string, Set<string>> = {
      grpc_type: new Set(["unary", "server_stream", "client_stream", "bidi_stream"]),
      grpc_service: new Set(servedServiceDescriptors.map((service) => service.typeName)),
      grpc_method: new Set(servedServiceDescriptors.flatMap((service) => service.methods.map((method) => method.name))),
      grpc_code: new Set(["OK", ...Object.values(Code).filter((name): name is string => typeof name === "string")]),
      operation_type: new Set(operationTypeNames.values()),
      state: new Set(taskStateNames.values()),
      event_type: new Set(eventTypeNames.values()),
      gate: new Set(gates),
      verdict: new Set(["allow", "deny"]),
      method: new Set(storeWrites),
    };
    for (const { name, labels } of exposition.samples) {
      for (const [label, value] of Object.entries(labels)) {
        if (label === "le") continue; // a histogram's bucket bound
        expect(allowed[label]?.has(value), `${name}{${label}="${value}"}`).toBe(true);
      }
    }
    const text = JSON.stringify(exposition.samples.map((sample) => sample.labels));
    expect(text).not.toMatch(/operations\/|delegations\/|profiles\/|runners\/|[0-9A-HJKMNP-TV-Z]{26}/);
    expect(text).not.toContain(PROFILE_ID);
    const families = [...exposition.types.keys()];
    expect(families.filter((name) => !name.startsWith("grpc_server_") && !name.startsWith("amctl_"))).toEqual([]);
    for (const [name, type] of exposition.types) if (type === "counter") expect(name).toMatch(/_total$/);
  });
});
