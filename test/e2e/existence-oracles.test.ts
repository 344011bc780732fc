// No RPC tells a caller what exists outside its scope (issue 14, finding 7), on both stores over
// real sockets. An operation in a profile the caller may not see is answered exactly as one that
// does not exist — NotFound, the same message and the same detail — by every RPC that names it:
// GetOperation, CancelOperation, WatchOperation, WatchOutput, DownloadDiagnostics, the WorkspaceService RPCs, the target of a cancel or a
// revoke (submitted or dry-run through EvaluatePolicy), whatever state it is in. Where the
// caller's scope alone decides (a profile named in a filter, another execution's operation at
// RuntimeService, a delegation outside the caller's subtree), the answer never depends on
// whether the resource exists either. The audit log, which only operators read, still records
// each such probe as the denial it was.
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditDecisionFilter, AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { DiagnosticsService } from "../../src/gen/agentmachine/v1/diagnostics_service_pb.js";
import { WorkspaceService } from "../../src/gen/agentmachine/v1/workspace_service_pb.js";
import { OutputService } from "../../src/gen/agentmachine/v1/output_service_pb.js";
import type { EvaluatePolicyResponse } from "../../src/gen/agentmachine/v1/policy_service_pb.js";
import { CallKind } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { bearer } from "../helpers/auth.js";
import { execution, requestId, waitForEnd } from "../helpers/operations.js";
import { applyGrant } from "../helpers/runtime.js";
import { denialOf } from "../helpers/policy.js";
import { errorShape, startWithScopedCallers, storesUnderTest, type ScopedCaller, type ScopedCallers } from "../helpers/scoped-callers.js";

const SLEEPER = [process.execPath, "-e", "setTimeout(() => {}, 60000)"];
/** Names that match the request patterns and name nothing. */
const MISSING_OPERATION = "operations/01ZZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_DELEGATION = "delegations/01ZZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_PROFILE = "profiles/nobody";

async function errorOf(call: () => Promise<unknown> | AsyncIterable<unknown>): Promise<ConnectError> {
  try {
    const result = call();
    if (Symbol.asyncIterator in result) for await (const _ of result) break;
    else await result;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected a refusal");
}

/** A dry run's denial, shaped as errorShape shapes an error. */
function denialShape(answer: EvaluatePolicyResponse, name: string) {
  expect(answer.allowed).toBe(false);
  const anonymous = (text: string) => text.replaceAll(name, "NAME");
  const denial = denialOf(answer);
  return {
    code: denial.code,
    message: anonymous(denial.message),
    reason: denial.reason,
    metadata: Object.fromEntries(Object.entries(denial.metadata).map(([key, value]) => [key, anonymous(value)])),
  };
}

describe.each(storesUnderTest())("%s", (_store, storeOf) => {
  let callers: ScopedCallers;
  let mine: ScopedCaller;
  let theirs: ScopedCaller;
  /** Operations of theirs in each state that a probe could tell apart. */
  const hidden: Record<string, string> = {};

  beforeAll(async () => {
    callers = await startWithScopedCallers(await storeOf());
    ({ mine, theirs } = callers);
    const ops = theirs.clients.operations;
    hidden.running = (await ops.submitOperation(execution(theirs.profile, SLEEPER))).operation!.name;
    const cancelled = (await ops.submitOperation(execution(theirs.profile, SLEEPER))).operation!.name;
    await ops.cancelOperation({ name: cancelled });
    expect((await waitForEnd(ops, cancelled)).operation.state).toBe(TaskState.CANCELLED);
    hidden.cancelled = cancelled;
    hidden["an applied grant"] = await applyGrant(ops, theirs.profile, "git");
  });
  afterAll(() => callers?.server.close());

  /** Every way of naming an operation, as `mine` asks it. */
  const probes: [string, (name: string) => Promise<ReturnType<typeof errorShape>>][] = [
    ["GetOperation", async (name) => errorShape(await errorOf(() => mine.clients.operations.getOperation({ name })), name)],
    ["CancelOperation", async (name) => errorShape(await errorOf(() => mine.clients.operations.cancelOperation({ name })), name)],
    ["WatchOperation", async (name) => errorShape(await errorOf(() => mine.clients.operations.watchOperation({ name })), name)],
    [
      "WatchOutput",
      async (name) => {
        const output = createClient(OutputService, createGrpcTransport({ baseUrl: callers.server.url, interceptors: [bearer(mine.token)] }));
        return errorShape(await errorOf(() => output.watchOutput({ name, follow: true })), name);
      },
    ],
    [
      "DownloadDiagnostics",
      async (name) => {
        const diagnostics = createClient(DiagnosticsService, createGrpcTransport({ baseUrl: callers.server.url, interceptors: [bearer(mine.token)] }));
        return errorShape(await errorOf(() => diagnostics.downloadDiagnostics({ operation: name })), name);
      },
    ],
    ...(["ListWorkspaceFiles", "DownloadWorkspaceFile", "DeleteWorkspace"] as const).map(
      (rpc): [string, (name: string) => Promise<ReturnType<typeof errorShape>>] => [
        rpc,
        async (name) => {
          const workspace = createClient(WorkspaceService, createGrpcTransport({ baseUrl: callers.server.url, interceptors: [bearer(mine.token)] }));
          const call = {
            ListWorkspaceFiles: () => workspace.listWorkspaceFiles({ operation: name }),
            DownloadWorkspaceFile: () => workspace.downloadWorkspaceFile({ operation: name, path: "out.txt" }),
            DeleteWorkspace: () => workspace.deleteWorkspace({ operation: name }),
          }[rpc];
          return errorShape(await errorOf(call), name);
        },
      ],
    ),
    ...(["cancel", "revoke"] as const).flatMap((command) => {
      const spec = (name: string) =>
        command === "cancel" ? { case: "executionCancel" as const, value: { target: name } } : { case: "toolGrantRevoke" as const, value: { grant: name } };
      const request = (name: string) => ({ requestId: requestId(command), profile: mine.profile, spec: { kind: spec(name) } });
      return [
        [
          `SubmitOperation (${command} target)`,
          async (name: string) => errorShape(await errorOf(() => mine.clients.operations.submitOperation(request(name))), name),
        ],
        [
          `EvaluatePolicy (${command} target)`,
          async (name: string) => denialShape(await mine.clients.policy.evaluatePolicy({ subject: { case: "operation", value: request(name) } }), name),
        ],
      ] as [string, (name: string) => Promise<ReturnType<typeof errorShape>>][];
    }),
  ];

  it.each(probes)("%s answers an operation in another profile exactly as one that does not exist: NotFound", async (_rpc, probe) => {
    const missing = await probe(MISSING_OPERATION);
    expect(["NotFound", "NOT_FOUND"]).toContain(missing.code);
    for (const [state, name] of Object.entries(hidden)) expect({ state, ...(await probe(name)) }).toEqual({ state, ...missing });
    expect((await theirs.clients.operations.getOperation({ name: hidden.running! })).operation?.state).not.toBe(TaskState.CANCELLED);
  });

  it("the audit log still records a probe of a hidden operation as the denial it was, for the operator", async () => {
    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: callers.server.url, interceptors: [bearer(callers.server.token)] }));
    const denials = async () =>
      (await audit.listAuditRecords({ pageSize: 1000, filter: { delegation: mine.delegation.name, decision: AuditDecisionFilter.DENIED } })).records.filter(
        (record) => record.rpc.endsWith("/GetOperation"),
      );
    const before = (await denials()).length;
    await errorOf(() => mine.clients.operations.getOperation({ name: MISSING_OPERATION }));
    expect(await denials()).toHaveLength(before); // asking for what does not exist is no denial
    await errorOf(() => mine.clients.operations.getOperation({ name: hidden.running! }));
    const recorded = await denials();
    expect(recorded).toHaveLength(before + 1);
    expect(recorded.at(-1)?.decision).toMatchObject({
      allowed: false,
      denialCode: RpcCode.PERMISSION_DENIED,
      reason: expect.stringContaining(`${theirs.profile} is not allowed`),
    });
  });

  it("a profile filter naming a profile out of scope is PermissionDenied whether the profile exists or not", async () => {
    const listing = async (profile: string) => errorShape(await errorOf(() => mine.clients.operations.listOperations({ filter: { profile } })), profile);
    const watching = async (profile: string) => errorShape(await errorOf(() => mine.clients.operations.watchEvents({ filter: { profile } })), profile);
    for (const probe of [listing, watching]) {
      const absent = await probe(MISSING_PROFILE);
      expect(absent).toMatchObject({ code: "PermissionDenied", reason: "OUT_OF_SCOPE" });
      expect(await probe(theirs.profile)).toEqual(absent);
    }
  });

  it("a delegation outside the caller's subtree is NotFound whether it exists or not", async () => {
    for (const probe of [
      async (name: string) => errorShape(await errorOf(() => mine.clients.delegations.getDelegation({ name })), name),
      async (name: string) => errorShape(await errorOf(() => mine.clients.delegations.revokeDelegation({ name })), name),
    ]) {
      const absent = await probe(MISSING_DELEGATION);
      expect(absent.code).toBe("NotFound");
      expect(await probe(theirs.delegation.name)).toEqual(absent);
    }
  });

  it("RuntimeService refuses another execution's operation as it refuses one that does not exist: PermissionDenied, decided by the credential", async () => {
    const probe = async (name: string) =>
      errorShape(await errorOf(() => mine.clients.runtime.authorizeCall({ operation: name, call: { kind: CallKind.CONNECTOR, connector: "c" } })), name);
    const absent = await probe(MISSING_OPERATION);
    expect(absent).toMatchObject({ code: "PermissionDenied", reason: "NOT_THIS_EXECUTION" });
    expect(await probe(hidden.running!)).toEqual(absent);
  });
});
