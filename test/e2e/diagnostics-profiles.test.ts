// A diagnostics bundle's recent-errors.json keeps only the log lines of its own profile and
// those that concern no profile at all (issue 14, finding 10). Before, it carried the last warn
// and error lines of the whole server, other profiles' included (their times, procedures and
// codes). Errors are made to happen in two profiles, A and B, by store failures injected into
// the running server: a submit whose write fails (an RPC that ends Internal, logged by the
// interceptors), a task whose claim fails (logged by the runner, naming its operation), and an
// audit read that fails (an RPC of no profile). A's bundle must hold A's lines and the
// profile-less one, and none of B's; B's bundle the converse. Real sockets, one in-process server.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decompress, untar } from "../../src/diagnostics/archive.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { DiagnosticsService } from "../../src/gen/agentmachine/v1/diagnostics_service_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { OperationStore } from "../../src/store/store.js";
import { createProfile, operationsClient, requestId, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";

const SUBMIT = "agentmachine.v1.OperationService/SubmitOperation";
const LIST_AUDIT = "agentmachine.v1.AuditService/ListAuditRecords";

let server: TestServer;
let client: OperationsClient;
const profiles: Record<"A" | "B", string> = { A: "", B: "" };
/** Each profile's task whose claim failed. */
const stuck: Record<"A" | "B", string> = { A: "", B: "" };
/** Each profile's recent-errors.json. */
const recentErrors: Record<"A" | "B", Record<string, unknown>[]> = { A: [], B: [] };

/** Makes the store fail (once per operation) the writes that `fault` picks by the operation's labels. */
function injectFaults(store: OperationStore): void {
  const createOperation = store.createOperation.bind(store);
  store.createOperation = async (input) => {
    if (input.operation.labels.fault === "submit") throw new Error("injected: the store refused the write");
    return createOperation(input);
  };
  const modifyOperation = store.modifyOperation.bind(store);
  const failed = new Set<string>();
  store.modifyOperation = async (name, ...rest) => {
    if ((await store.getOperation(name))?.labels.fault === "claim" && !failed.has(name)) {
      failed.add(name);
      throw new Error("injected: the store refused the claim");
    }
    return modifyOperation(name, ...rest);
  };
  const listAuditRecords = store.listAuditRecords.bind(store);
  let auditFailed = false;
  store.listAuditRecords = async (query) => {
    if (auditFailed) return listAuditRecords(query);
    auditFailed = true;
    throw new Error("injected: the store refused the read");
  };
}

function grant(profile: string, fault: string) {
  return { requestId: requestId("grant"), profile, labels: { fault }, spec: { kind: { case: "toolGrantApply" as const, value: { tool: "git" } } } };
}

async function until(what: string, condition: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 10_000; !condition(); await new Promise((resolve) => setTimeout(resolve, 20))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

async function recentErrorsOf(profile: string): Promise<Record<string, unknown>[]> {
  const { operation } = await client.submitOperation({ requestId: requestId("diag"), profile, spec: { kind: { case: "diagnosticsExport", value: {} } } });
  const { operation: done } = await waitForEnd(client, operation!.name, 60_000);
  expect(done.state, JSON.stringify(done.stopCause)).toBe(TaskState.COMPLETED);
  const diagnostics = createClient(DiagnosticsService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  const chunks: Uint8Array[] = [];
  for await (const { chunk } of diagnostics.downloadDiagnostics({ operation: done.name })) chunks.push(chunk);
  const file = (await untar(await decompress(Buffer.concat(chunks)))).find((entry) => entry.name.endsWith("/recent-errors.json"));
  return JSON.parse(file!.data.toString("utf8")) as Record<string, unknown>[];
}

beforeAll(async () => {
  server = await startTestServer();
  client = operationsClient(server.url);
  profiles.A = await createProfile(client, "diag-a");
  profiles.B = await createProfile(client, "diag-b");
  injectFaults(server.store);
  for (const key of ["A", "B"] as const) {
    await expect(client.submitOperation(grant(profiles[key], "submit"))).rejects.toThrow(/internal error/);
    stuck[key] = (await client.submitOperation(grant(profiles[key], "claim"))).operation!.name;
  }
  await until("the runner's two failures", () => server.logs.filter((line) => line.msg === "task failed unexpectedly").length === 2);
  const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  await expect(audit.listAuditRecords({})).rejects.toThrow(/internal error/);
  recentErrors.A = await recentErrorsOf(profiles.A);
  recentErrors.B = await recentErrorsOf(profiles.B);
}, 120_000);
afterAll(() => server.close());

it("the server logged the failures of both profiles (the lines the bundles choose from)", () => {
  const failures = server.logs.filter((line) => line.level === "warn" || line.level === "error").map((line) => line.msg);
  expect(failures.filter((msg) => msg === "rpc failed")).toHaveLength(3);
  expect(failures.filter((msg) => msg === "unexpected error in handler")).toHaveLength(3);
  expect(failures.filter((msg) => msg === "task failed unexpectedly")).toHaveLength(2);
});

describe.each(["A", "B"] as const)("profile %s's bundle", (own) => {
  const other = own === "A" ? "B" : "A";

  it("keeps its own failed submit and the audit read that concerns no profile, and not the other profile's submit", () => {
    const rpcFailures = recentErrors[own].filter((line) => line.msg === "rpc failed");
    expect(rpcFailures.map((line) => ({ procedure: line.procedure, code: line.code, profiles: line.profiles }))).toEqual([
      { procedure: SUBMIT, code: "Internal", profiles: [profiles[own]] },
      { procedure: LIST_AUDIT, code: "Internal", profiles: undefined },
    ]);
    const handlerErrors = recentErrors[own].filter((line) => line.msg === "unexpected error in handler");
    expect(handlerErrors.map((line) => line.profiles)).toEqual([[profiles[own]], undefined]);
  });

  it("keeps its own task's failure, naming the operation, and not the other profile's", () => {
    const taskFailures = recentErrors[own].filter((line) => line.msg === "task failed unexpectedly");
    expect(taskFailures.map((line) => line.operation)).toEqual([stuck[own]]);
  });

  it("names nothing of the other profile", () => {
    const text = JSON.stringify(recentErrors[own]);
    expect(text).not.toContain(profiles[other]);
    expect(text).not.toContain(stuck[other]);
  });
});
