// The audit log end to end, over real sockets against a real server and store: which calls leave
// which records (commands, denials at any RPC, unauthenticated calls), that a command's record
// commits with its effect, reading the log (filters, pages, a resumable watch), signed
// checkpoints that verify, who may read, and that no secret of a request reaches a record.
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import { createHash } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalJson, recordHash } from "../../src/model/audit-chain.js";
import { redactedRequestDigest } from "../../src/audit/request-digest.js";
import { parseVerifierKey, verifyCheckpointNote } from "../../src/audit/signed-note.js";
import type { AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AuditDecisionFilter, AuditService, type AuditFilterSchema } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationService, SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { CallKind } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { OperationType, PolicyGate, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { SQLITE_FILE } from "../../src/store/sqlite/sqlite-store.js";
import { bearer, fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { envValueCanaries, leaks } from "../helpers/canaries.js";
import { createProfile, execution, requestId, waitForEnd } from "../helpers/operations.js";
import { bundleSource, policyAdmin, sha256 } from "../helpers/policy.js";
import { applyGrant, cancelAndWait, clientsFor, refusal, startCredentialed, type Clients } from "../helpers/runtime.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

type AuditFilterInit = MessageInitShape<typeof AuditFilterSchema>;

const rpc = (service: string, method: string) => `/agentmachine.v1.${service}/${method}`;
const commandRef = (name: string) => `urn:srcos:workspace-operation-command:${name}`;
const SUBMIT = rpc("OperationService", "SubmitOperation");
const CANCEL = rpc("OperationService", "CancelOperation");

let server: TestServer;
let root: Clients;
let audit: Client<typeof AuditService>;
let rootDelegation: string;
let personal: string;

function auditClient(token: string): Client<typeof AuditService> {
  return createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
}

/** Every record after `after` matching `filter`, read page by page. */
async function recordsAfter(after: bigint, filter: AuditFilterInit = {}, pageSize = 1000): Promise<AuditRecord[]> {
  const records: AuditRecord[] = [];
  let pageToken = "";
  do {
    const page = await audit.listAuditRecords({ pageSize, pageToken, filter });
    records.push(...page.records.filter((r) => r.sequence > after));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return records;
}

async function head(): Promise<bigint> {
  return (await recordsAfter(0n)).at(-1)?.sequence ?? 0n;
}

/** The records that calls made by `act` left. */
async function recordsOf(act: () => Promise<unknown>): Promise<AuditRecord[]> {
  const before = await head();
  await act();
  return recordsAfter(before);
}

const allowedGrant = { allowed: true, gates: [PolicyGate.TOOL_GRANT], rule: "test.allow-tool-grants" };

beforeAll(async () => {
  server = await startTestServer({ auditCheckpointIntervalMs: 100 });
  root = clientsFor(server.url, server.token);
  audit = auditClient(server.token);
  rootDelegation = (await root.delegations.whoAmI({})).delegation!.name;
  personal = await createProfile(root.operations, "audited");
});
afterAll(() => server.close());

describe("what is recorded", () => {
  it("records a submit once, with who, which delegation, the RPC, the command, the resource and the policy decision", async () => {
    const request = { requestId: requestId(), profile: personal, spec: { kind: { case: "toolGrantApply" as const, value: { tool: "git" } } } };
    let name = "";
    const records = await recordsOf(async () => {
      name = (await root.operations.submitOperation(request)).operation!.name;
      await waitForEnd(root.operations, name);
      // A retried submit creates nothing, so it records nothing.
      await root.operations.submitOperation(request);
    });
    const personalDigest = (await root.policy.listPolicyBundles({})).bundles.find((b) => b.profileType === ProfileType.PERSONAL)!.digest;
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      principal: "test-operator",
      delegation: rootDelegation,
      delegationChain: [rootDelegation],
      rpc: rpc("OperationService", "SubmitOperation"),
      operationType: OperationType.TOOL_GRANT_APPLY,
      commandRef: commandRef("tool-grant-apply"),
      resource: name,
      decision: { ...allowedGrant, bundleDigest: personalDigest, denialCode: RpcCode.OK, reason: "" },
    });
    expect(records[0]!.requestDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(records[0]!.hash).toBe(recordHash(records[0]!));
  });

  it("records a cancel as the execution.cancel operation it creates", async () => {
    const { operation } = await root.operations.submitOperation(execution(personal, [process.execPath, "-e", "setTimeout(() => {}, 60000)"]));
    const records = await recordsOf(() => cancelAndWait(root.operations, operation!.name));
    const cancels = (await root.operations.listOperations({ filter: { types: [OperationType.EXECUTION_CANCEL] } })).operations;
    expect(records).toMatchObject([
      {
        rpc: rpc("OperationService", "CancelOperation"),
        operationType: OperationType.EXECUTION_CANCEL,
        commandRef: commandRef("execution-cancel"),
        resource: cancels[0]!.name,
        decision: { allowed: true },
      },
    ]);
  });

  it("records a denial by policy with the gate, the rule and the bundle digest, and stores nothing else", async () => {
    const source = bundleSource("corporate_firewall", [
      { id: "corp.no-curl", gate: "toolGrant", effect: "deny", when: 'input.tool == "curl"' },
      { id: "corp.tools", gate: "toolGrant", effect: "allow", when: "true" },
    ]);
    const admin = clientsFor(server.url, await policyAdmin(server.dataDir, [ProfileType.CORPORATE_FIREWALL]));
    const adminDelegation = (await admin.delegations.whoAmI({})).delegation!.name;
    let bundle = "";
    let corporate = "";
    const records = await recordsOf(async () => {
      bundle = (await admin.policy.applyPolicyBundle({ profileType: ProfileType.CORPORATE_FIREWALL, source })).bundle!.name;
      corporate = await createProfile(root.operations, "corp-audited", ProfileType.CORPORATE_FIREWALL);
      const denied = await refusal(
        root.operations.submitOperation({ requestId: requestId(), profile: corporate, spec: { kind: { case: "toolGrantApply", value: { tool: "curl" } } } }),
      );
      expect(denied.code).toBe(Code.PermissionDenied);
    });
    expect(records).toMatchObject([
      {
        rpc: rpc("PolicyService", "ApplyPolicyBundle"),
        commandRef: "ApplyPolicyBundle",
        operationType: OperationType.UNSPECIFIED,
        resource: bundle,
        delegation: adminDelegation,
        decision: { allowed: true },
      },
      { rpc: rpc("OperationService", "SubmitOperation"), operationType: OperationType.PROFILE_CREATE, decision: { allowed: true } },
      {
        rpc: rpc("OperationService", "SubmitOperation"),
        operationType: OperationType.TOOL_GRANT_APPLY,
        commandRef: commandRef("tool-grant-apply"),
        resource: "",
        delegation: rootDelegation,
        decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED, gates: [PolicyGate.TOOL_GRANT], rule: "corp.no-curl", bundleDigest: sha256(source) },
      },
    ]);
    expect(records[2]!.decision!.reason).toContain("corp.no-curl");
    expect(records).toHaveLength(3);
  });

  it("records issuing and revoking a delegation, and an out-of-scope attempt under the child with its whole chain", async () => {
    let child = "";
    let token = "";
    const records = await recordsOf(async () => {
      ({
        delegation: { name: child } = { name: "" },
        token,
      } = await root.delegations.issueDelegation({
        subject: "agent-audited",
        scope: { operationTypes: [OperationType.TOOL_GRANT_APPLY], profiles: ["*"], tools: ["*"] },
      }));
      const denied = await refusal(clientsFor(server.url, token).operations.submitOperation(execution(personal, ["true"])));
      expect(denied.code).toBe(Code.PermissionDenied);
      await root.delegations.revokeDelegation({ name: child, reason: "done" });
      // Revoking it again revokes nothing: no record.
      await root.delegations.revokeDelegation({ name: child, reason: "again" });
    });
    expect(records).toMatchObject([
      {
        rpc: rpc("DelegationService", "IssueDelegation"),
        commandRef: "IssueDelegation",
        resource: child,
        principal: "test-operator",
        decision: { allowed: true },
      },
      {
        rpc: rpc("OperationService", "SubmitOperation"),
        operationType: OperationType.EXECUTION_START,
        principal: "agent-audited",
        delegation: child,
        delegationChain: [rootDelegation, child],
        decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED },
      },
      { rpc: rpc("DelegationService", "RevokeDelegation"), commandRef: "RevokeDelegation", resource: child, decision: { allowed: true } },
    ]);
    expect(records).toHaveLength(3);
    // A call with the revoked credential is an unauthenticated attempt.
    const after = await recordsOf(() => refusal(clientsFor(server.url, token).operations.listOperations({})));
    expect(after).toMatchObject([
      {
        principal: "anonymous",
        delegation: "",
        rpc: rpc("OperationService", "ListOperations"),
        commandRef: "ListOperations",
        decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED },
      },
    ]);
  });

  it("records a budget refusal as resource_exhausted, and no operation", async () => {
    const { delegation, token } = await root.delegations.issueDelegation({
      subject: "agent-small",
      scope: { operationTypes: [OperationType.EXECUTION_START], profiles: ["*"], budget: { tokens: 10n } },
    });
    const records = await recordsOf(async () => {
      const refused = await refusal(clientsFor(server.url, token).operations.submitOperation(execution(personal, ["true"], {}, { tokens: 1000n })));
      expect(refused.code).toBe(Code.ResourceExhausted);
    });
    expect(records).toMatchObject([
      {
        principal: "agent-small",
        delegation: delegation!.name,
        operationType: OperationType.EXECUTION_START,
        resource: "",
        decision: { allowed: false, denialCode: RpcCode.RESOURCE_EXHAUSTED },
      },
    ]);
    expect(records).toHaveLength(1);
  });

  // The first of each source and reason at once; floods are summed (audit-refusals.test.ts).
  it("records unauthenticated calls to any RPC, unary or streaming, as anonymous with the request's digest and the source", async () => {
    const anonymous = createClient(OperationService, createGrpcTransport({ baseUrl: server.url }));
    const garbled = createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer("not-a-jwt")] }));
    const records = await recordsOf(async () => {
      expect((await refusal(anonymous.getOperation({ name: "operations/x" }))).code).toBe(Code.Unauthenticated);
      const watch = garbled.watchEvents({ afterSequence: 0n });
      expect(
        (
          await refusal(
            (async () => {
              for await (const _ of watch) void _;
            })(),
          )
        ).code,
      ).toBe(Code.Unauthenticated);
    });
    expect(records).toMatchObject([
      {
        principal: "anonymous",
        delegation: "",
        delegationChain: [],
        rpc: rpc("OperationService", "GetOperation"),
        sourceAddress: "127.0.0.1",
        decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED },
      },
      {
        principal: "anonymous",
        rpc: rpc("OperationService", "WatchEvents"),
        commandRef: "WatchEvents",
        sourceAddress: "127.0.0.1",
        decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED },
      },
    ]);
    for (const record of records) expect(record.requestDigest).toMatch(/^[0-9a-f]{64}$/);
  });

  it("records an AuthorizeCall that charges the budget, and one that is refused", async () => {
    await applyGrant(root.operations, personal, "git");
    const running = await startCredentialed(server.url, server.dataDir, root.operations, personal);
    try {
      const records = await recordsOf(async () => {
        expect((await running.runtime.authorizeCall({ operation: running.operation.name, call: { kind: CallKind.TOOL, tool: "git" } })).allowed).toBe(true);
        expect((await running.runtime.authorizeCall({ operation: running.operation.name, call: { kind: CallKind.TOOL, tool: "curl" } })).allowed).toBe(false);
      });
      const who = (await running.clients.delegations.whoAmI({})).delegation!;
      expect(records).toMatchObject([
        {
          rpc: rpc("RuntimeService", "AuthorizeCall"),
          commandRef: "AuthorizeCall",
          resource: running.operation.name,
          delegation: who.name,
          principal: who.subject,
          decision: { allowed: true },
        },
        { rpc: rpc("RuntimeService", "AuthorizeCall"), resource: running.operation.name, decision: { allowed: false } },
      ]);
      expect(records[0]!.delegationChain).toEqual([rootDelegation, who.name]);
    } finally {
      await cancelAndWait(root.operations, running.operation.name);
    }
  });

  it("has exactly one record for every operation ever created, of its creation, whose resource is the operation", async () => {
    const records = await recordsAfter(0n, { decision: AuditDecisionFilter.ALLOWED });
    const created = (await root.operations.listOperations({ pageSize: 1000 })).operations;
    expect(created.length).toBeGreaterThan(5);
    for (const operation of created) {
      const creations = records.filter((r) => r.resource === operation.name && [SUBMIT, CANCEL].includes(r.rpc));
      expect(creations.map((r) => r.operationType)).toEqual([operation.type]);
    }
  });
});

describe("reading the log", () => {
  it("filters by principal, delegation, operation type, decision and time, and pages without losing or repeating a record", async () => {
    const all = await recordsAfter(0n);
    all.forEach((record, i) => {
      expect(record.sequence).toBe(BigInt(i + 1));
      if (i > 0) expect(record.previousHash).toBe(all[i - 1]!.hash);
    });
    const expectFiltered = async (filter: AuditFilterInit, keep: (r: AuditRecord) => boolean) => {
      const expected = all.filter(keep).map((r) => r.sequence);
      expect(expected.length).toBeGreaterThan(0);
      expect((await recordsAfter(0n, filter)).map((r) => r.sequence)).toEqual(expected);
    };
    await expectFiltered({ principal: "agent-audited" }, (r) => r.principal === "agent-audited");
    await expectFiltered({ delegation: rootDelegation }, (r) => r.delegation === rootDelegation);
    await expectFiltered({ operationTypes: [OperationType.PROFILE_CREATE, OperationType.EXECUTION_CANCEL] }, (r) =>
      [OperationType.PROFILE_CREATE, OperationType.EXECUTION_CANCEL].includes(r.operationType),
    );
    await expectFiltered({ decision: AuditDecisionFilter.DENIED }, (r) => !r.decision?.allowed);
    const middle = all[Math.floor(all.length / 2)]!.time!;
    await expectFiltered(
      { startTime: middle },
      (r) => r.time!.seconds > middle.seconds || (r.time!.seconds === middle.seconds && r.time!.nanos >= middle.nanos),
    );
    await expectFiltered({ endTime: timestampFromDate(new Date(Date.now() + 60_000)) }, () => true);
    // Pages of two, followed to the end, are the whole list.
    expect((await recordsAfter(0n, {}, 2)).map((r) => r.sequence)).toEqual(all.map((r) => r.sequence));
    const first = await audit.listAuditRecords({ pageSize: 2 });
    expect(first.records).toHaveLength(2);
    // A token is bound to its filter, and cannot be edited.
    expect((await refusal(audit.listAuditRecords({ pageSize: 2, pageToken: first.nextPageToken, filter: { principal: "x" } }))).code).toBe(
      Code.InvalidArgument,
    );
    expect((await refusal(audit.listAuditRecords({ pageSize: 2, pageToken: `${first.nextPageToken}x` }))).code).toBe(Code.InvalidArgument);
  });

  it("watches from a sequence and resumes after the last record seen, without gaps or duplicates while submits run", async () => {
    const start = await head();
    const submits = 30;
    const writing = (async () => {
      for (let i = 0; i < submits; i += 1) {
        await root.operations.submitOperation({
          requestId: requestId(),
          profile: personal,
          spec: { kind: { case: "toolGrantApply", value: { tool: `tool-${i}` } } },
        });
      }
    })();
    const seen: bigint[] = [];
    // Three watches one after the other, each cut off after ten records and resumed after the last.
    for (let watch = 0; watch < 3; watch += 1) {
      const abort = new AbortController();
      for await (const { record } of audit.watchAuditRecords({ afterSequence: seen.at(-1) ?? start }, { signal: abort.signal })) {
        seen.push(record!.sequence);
        if (seen.length % 10 === 0) break;
      }
      abort.abort();
    }
    await writing;
    expect(seen).toEqual(Array.from({ length: submits }, (_, i) => start + BigInt(i + 1)));
    // A filtered watch sees only what matches, from the whole log.
    const denied = (await recordsAfter(0n, { decision: AuditDecisionFilter.DENIED })).map((r) => r.sequence);
    const watched: bigint[] = [];
    for await (const { record } of audit.watchAuditRecords({ filter: { decision: AuditDecisionFilter.DENIED } })) {
      watched.push(record!.sequence);
      if (watched.length === denied.length) break;
    }
    expect(watched).toEqual(denied);
  });

  it("serves signed checkpoints that verify with the verifier key it publishes", async () => {
    const last = await head();
    let response = await audit.getCheckpoint({});
    for (const deadline = Date.now() + 5000; (response.checkpoint?.size ?? 0n) < last && Date.now() < deadline; response = await audit.getCheckpoint({})) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const { checkpoint, verifierKey } = response;
    expect(checkpoint!.size).toBeGreaterThanOrEqual(last);
    const stated = verifyCheckpointNote(checkpoint!.signedNote, parseVerifierKey(verifierKey));
    expect(stated).toEqual({ origin: checkpoint!.origin, size: checkpoint!.size, headHash: checkpoint!.headHash });
    expect(checkpoint!.origin).toMatch(/^agent-machine\/audit\/[0-9a-f-]{36}$/);
    const records = await recordsAfter(0n);
    expect(checkpoint!.headHash).toBe(records[Number(checkpoint!.size) - 1]!.hash);
    // Every checkpoint, oldest first, page by page.
    const sizes: bigint[] = [];
    let pageToken = "";
    do {
      const page = await audit.listCheckpoints({ pageSize: 1, pageToken });
      sizes.push(...page.checkpoints.map((c) => c.size));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(sizes.at(-1)).toBe(checkpoint!.size);
    expect([...sizes].sort((a, b) => (a < b ? -1 : 1))).toEqual(sizes);
  });

  it("refuses every read to a caller whose delegation lacks audit_read, and records the attempt", async () => {
    const token = await mintRoot(await operatorOf(server.dataDir), { subject: "no-audit", scope: { ...fullScope, auditRead: false } });
    const reader = auditClient(token);
    const attempts = [
      () => reader.listAuditRecords({}),
      () => reader.getCheckpoint({}),
      () => reader.listCheckpoints({}),
      async () => {
        for await (const _ of reader.watchAuditRecords({})) void _;
      },
    ];
    const records = await recordsOf(async () => {
      for (const attempt of attempts) {
        const error = await refusal(attempt());
        expect(error.code).toBe(Code.PermissionDenied);
        expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "OUT_OF_SCOPE", metadata: { axis: "audit_read" } });
      }
    });
    expect(records.map((r) => [r.principal, r.commandRef, r.decision?.denialCode])).toEqual(
      expect.arrayContaining([
        ["no-audit", "ListAuditRecords", RpcCode.PERMISSION_DENIED],
        ["no-audit", "GetCheckpoint", RpcCode.PERMISSION_DENIED],
        ["no-audit", "ListCheckpoints", RpcCode.PERMISSION_DENIED],
        ["no-audit", "WatchAuditRecords", RpcCode.PERMISSION_DENIED],
      ]),
    );
  });
});

describe("secrets", () => {
  it("keeps an execution's secret environment values out of every audit record, digest included", async () => {
    const canaries = envValueCanaries(3);
    const request = execution(personal, [process.execPath, "-e", "0"], {
      env: { API_KEY: canaries[0]!.value, SESSION_TOKEN: canaries[1]!.value, PLAIN: canaries[2]!.value },
    });
    const records = await recordsOf(async () => {
      const { operation } = await root.operations.submitOperation(request);
      expect((await waitForEnd(root.operations, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
    });
    expect(records).toHaveLength(1);
    // The digest is of the request with the values blanked, not of the request as sent.
    expect(records[0]!.requestDigest).toBe(redactedRequestDigest(SubmitOperationRequestSchema, request));
    expect(records[0]!.requestDigest).not.toBe(createHash("sha256").update(toBinary(SubmitOperationRequestSchema, request)).digest("hex"));
    // Nothing of the canaries in any record, as the API serves it or as the store keeps it.
    const served = new Map((await recordsAfter(0n)).map((r) => [`record ${r.sequence}`, canonicalJson(r)]));
    const db = new Database(join(server.dataDir, SQLITE_FILE), { readonly: true });
    try {
      const rows = db.prepare("SELECT * FROM audit_records").all() as Record<string, unknown>[];
      for (const [i, row] of rows.entries())
        served.set(
          `row ${i}`,
          JSON.stringify(row, (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value)),
        );
    } finally {
      db.close();
    }
    expect(leaks(canaries, served)).toEqual([]);
  });
});
