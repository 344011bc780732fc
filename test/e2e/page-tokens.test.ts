// Page tokens are bound to the RPC that issued them and to its filter (issue 14, finding 8).
// Before the binding, an operations token sent to ListAuditRecords failed with Internal (its
// position, an operation name, went to BigInt), and an audit token sent to ListOperations gave
// a silently empty page (its sequence number read as an operation name), because both RPCs
// digested an empty filter alike. Every token of one paginated RPC sent to another, one with
// another filter, and any garbled token is InvalidArgument naming page_token. Real sockets, one
// in-process server.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditDecisionFilter, AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { createProfile, operationsClient, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";
import { bearer } from "../helpers/auth.js";
import { policyClient, type PolicyClient } from "../helpers/policy.js";

let server: TestServer;
let operations: OperationsClient;
let audit: Client<typeof AuditService>;
let delegations: Client<typeof DelegationService>;
let policy: PolicyClient;

/** A paginated RPC: its first page of one item, then the page a token leads to, with the default filter or another one. */
interface Paginated {
  name: string;
  firstToken: () => Promise<string>;
  page: (pageToken: string, otherFilter?: boolean) => Promise<number>;
}

const rpcs: Paginated[] = [
  {
    name: "ListOperations",
    firstToken: async () => (await operations.listOperations({ pageSize: 1 })).nextPageToken,
    page: async (pageToken, otherFilter) =>
      (await operations.listOperations({ pageSize: 1, pageToken, ...(otherFilter ? { filter: { types: [OperationType.PROFILE_CREATE] } } : {}) })).operations
        .length,
  },
  {
    name: "ListAuditRecords",
    firstToken: async () => (await audit.listAuditRecords({ pageSize: 1 })).nextPageToken,
    page: async (pageToken, otherFilter) =>
      (await audit.listAuditRecords({ pageSize: 1, pageToken, ...(otherFilter ? { filter: { decision: AuditDecisionFilter.ALLOWED } } : {}) })).records.length,
  },
  {
    name: "ListCheckpoints",
    firstToken: async () => (await audit.listCheckpoints({ pageSize: 1 })).nextPageToken,
    page: async (pageToken) => (await audit.listCheckpoints({ pageSize: 1, pageToken })).checkpoints.length,
  },
  {
    name: "ListDelegations",
    firstToken: async () => (await delegations.listDelegations({ pageSize: 1 })).nextPageToken,
    page: async (pageToken, otherFilter) =>
      (await delegations.listDelegations({ pageSize: 1, pageToken, includeInactive: otherFilter ?? false })).delegations.length,
  },
  {
    name: "ListPolicyBundles",
    firstToken: async () => (await policy.listPolicyBundles({ pageSize: 1 })).nextPageToken,
    page: async (pageToken) => (await policy.listPolicyBundles({ pageSize: 1, pageToken })).bundles.length,
  },
];
const tokens = new Map<string, string>();

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal, but the call succeeded"),
      (e: unknown) => e,
    ),
  );
}

function expectPageTokenRefused(error: ConnectError): void {
  expect({ code: Code[error.code], message: error.rawMessage }).toEqual({
    code: Code[Code.InvalidArgument],
    message: expect.stringMatching(/^page_token: /) as unknown,
  });
  const violations = error.findDetails(ViolationsSchema)[0]?.violations ?? [];
  expect(violations.map((v) => v.field?.elements.map((e) => e.fieldName).join("."))).toEqual(["page_token"]);
}

/** Waits until the audit log has at least `count` checkpoints. */
async function checkpoints(count: number): Promise<void> {
  for (const deadline = Date.now() + 10_000; (await audit.listCheckpoints({ pageSize: count })).checkpoints.length < count; ) {
    if (Date.now() > deadline) throw new Error(`fewer than ${count} checkpoints after 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  server = await startTestServer({ auditCheckpointIntervalMs: 50 });
  operations = operationsClient(server.url);
  audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  delegations = createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  policy = policyClient(server.url);
  // The caller's delegation and a child of it: two delegations (the server's default bundles are
  // several already).
  await delegations.issueDelegation({ subject: "paging-child", scope: {} });
  // Two of everything, so each RPC's first page has a next page: operations and audit records
  // (each submit leaves one), and checkpoints (one after each).
  await createProfile(operations, "paging-a");
  await checkpoints(1);
  await createProfile(operations, "paging-b");
  await checkpoints(2);
  for (const rpc of rpcs) tokens.set(rpc.name, await rpc.firstToken());
});
afterAll(() => server.close());

describe("a page token leads to the next page of the RPC and filter that issued it", () => {
  it.each(rpcs)("$name", async (rpc) => {
    expect(tokens.get(rpc.name)).not.toBe("");
    expect(await rpc.page(tokens.get(rpc.name)!)).toBe(1);
  });
});

describe("a token of another paginated RPC is InvalidArgument naming page_token", () => {
  const pairs = rpcs.flatMap((from) => rpcs.filter((to) => to !== from).map((to) => ({ from: from.name, to })));
  it.each(pairs)("$from's token sent to $to.name", async ({ from, to }) => {
    expectPageTokenRefused(await refusal(to.page(tokens.get(from)!)));
  });
});

describe("a token used with another filter is InvalidArgument naming page_token", () => {
  it.each(rpcs.filter((rpc) => rpc.name !== "ListCheckpoints" && rpc.name !== "ListPolicyBundles"))("$name", async (rpc) => {
    expectPageTokenRefused(await refusal(rpc.page(tokens.get(rpc.name)!, true)));
  });
});

it("a ListDelegations token of another caller is InvalidArgument naming page_token: it is a position in the issuer's subtree", async () => {
  const { token } = await delegations.issueDelegation({ subject: "paging-other", scope: { mayDelegate: true } });
  const other = createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
  await other.issueDelegation({ subject: "paging-grandchild", scope: {} });
  const othersToken = (await other.listDelegations({ pageSize: 1 })).nextPageToken;
  expect(othersToken).not.toBe("");
  expectPageTokenRefused(await refusal(delegations.listDelegations({ pageSize: 1, pageToken: othersToken })));
  expectPageTokenRefused(await refusal(other.listDelegations({ pageSize: 1, pageToken: tokens.get("ListDelegations")! })));
});

describe("a garbled token is InvalidArgument naming page_token, never Internal", () => {
  const garbled = (token: string): string[] => {
    const [payload, mac] = token.split(".") as [string, string];
    return [
      "garbage",
      "a.b",
      `${token}.x`,
      `${payload}.`,
      `.${mac}`,
      `${payload.slice(0, -1)}${payload.endsWith("A") ? "B" : "A"}.${mac}`,
      `${payload}.${mac.slice(0, -1)}${mac.endsWith("A") ? "B" : "A"}`,
      `${Buffer.from('{"after":"1","filter":"x"}').toString("base64url")}.${mac}`,
    ];
  };
  it.each(rpcs)("$name", async (rpc) => {
    for (const token of garbled(tokens.get(rpc.name)!)) expectPageTokenRefused(await refusal(rpc.page(token)));
  });
});

it("logged no unexpected error", () => {
  expect(server.logs.filter((line) => line.msg === "unexpected error in handler")).toEqual([]);
});
