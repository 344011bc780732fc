// Delegations end to end: attenuation, budget carving without races, expiry, revocation that
// cascades to descendants, cancels their running operations and ends their streams, and
// profile visibility of reads and watches.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { bearer } from "../helpers/auth.js";
import { addBudgets } from "../../src/model/budget-math.js";
import type { Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { defaultConfig } from "../../src/config/config.js";
import { execution, requestId, waitForEnd } from "../helpers/operations.js";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;

function delegations(token: string): Client<typeof DelegationService> {
  return createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
}
function operations(token: string): Client<typeof OperationService> {
  return createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
}
async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal"),
      (e: unknown) => e,
    ),
  );
}

const twice = (budget: Budget): Budget => addBudgets(budget, budget);
const grantOnly = {
  operationTypes: [OperationType.TOOL_GRANT_APPLY, OperationType.EXECUTION_START, OperationType.EXECUTION_CANCEL],
  profiles: ["profiles/team-a"],
  tools: ["git"],
};

beforeAll(async () => {
  server = await startTestServer();
  const root = operations(server.token);
  for (const profileId of ["team-a", "team-b"]) {
    const { operation } = await root.submitOperation({
      requestId: requestId(),
      spec: { kind: { case: "profileCreate", value: { profileId, profileType: ProfileType.PERSONAL } } },
    });
    for await (const _ of root.watchOperation({ name: operation!.name })) void _;
  }
});
afterAll(() => server.close());

describe("issuing", () => {
  it("issues a child within the caller's scope; the child sees its chain and acts within it", async () => {
    const { delegation, token } = await delegations(server.token).issueDelegation({ subject: "agent-1", scope: { ...grantOnly, budget: { tokens: 10n } } });
    expect(delegation?.parent).toMatch(/^delegations\//);
    const who = await delegations(token).whoAmI({});
    expect(who.delegation?.subject).toBe("agent-1");
    expect(who.chain.map((d) => d.subject)).toEqual(["test-operator"]);
    const { operation } = await operations(token).submitOperation({
      requestId: requestId(),
      profile: "profiles/team-a",
      spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
    });
    expect(operation?.delegation).toBe(delegation?.name);
  });

  it.each([
    ["an operation type", { ...grantOnly, operationTypes: [OperationType.CONTAINER_RUN] }, "operation_types"],
    ["a profile", { ...grantOnly, profiles: ["profiles/team-b"] }, "profiles"],
    ["a tool", { ...grantOnly, tools: ["browser"] }, "tools"],
  ])("refuses a grandchild wider than its parent in %s, naming the axis", async (_what, scope, axis) => {
    const { token } = await delegations(server.token).issueDelegation({ subject: "middle", scope: { ...grantOnly, mayDelegate: true } });
    const error = await refusal(delegations(token).issueDelegation({ subject: "wide", scope }));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.findDetails(ErrorInfoSchema)[0]?.metadata.axis).toBe(axis);
  });

  it("refuses any child of a delegation that may not delegate, naming may_delegate", async () => {
    const { token } = await delegations(server.token).issueDelegation({ subject: "no-rights", scope: grantOnly });
    const error = await refusal(delegations(token).issueDelegation({ subject: "wide", scope: grantOnly }));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.findDetails(ErrorInfoSchema)[0]?.metadata.axis).toBe("may_delegate");
  });

  it("carves budgets out of what remains, without overspending under concurrent issues", async () => {
    const { token } = await delegations(server.token).issueDelegation({
      subject: "budget-holder",
      scope: { ...grantOnly, mayDelegate: true, budget: { tokens: 100n } },
    });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        delegations(token)
          .issueDelegation({ subject: `child-${i}`, scope: { ...grantOnly, budget: { tokens: 20n } } })
          .then(
            () => "issued",
            (e: unknown) => ConnectError.from(e).code,
          ),
      ),
    );
    expect(results.filter((r) => r === "issued")).toHaveLength(5);
    expect(results.filter((r) => r === Code.PermissionDenied)).toHaveLength(5);
  });

  it("reports what each delegation can still give: its budget less its children's carve-outs and its operations' reservations", async () => {
    const execute = { operationTypes: [OperationType.EXECUTION_START, OperationType.EXECUTION_CANCEL], profiles: ["profiles/team-a"] };
    const budget = {
      tokens: 1000n,
      wallClockSeconds: 600n,
      cpuGpuComputeSeconds: 600n,
      localDiskBytes: 1n << 30n,
      sandboxMemoryBytes: 1n << 30n,
      agentConcurrency: 4n,
    };
    const { delegation: holder, token } = await delegations(server.token).issueDelegation({
      subject: "remaining-holder",
      scope: { ...execute, mayDelegate: true, budget },
    });
    const { delegation: child, token: childToken } = await delegations(token).issueDelegation({
      subject: "remaining-child",
      scope: { ...execute, budget: { tokens: 300n } },
    });
    const { operation } = await operations(token).submitOperation(
      execution("profiles/team-a", ["sleep", "60"], {}, { tokens: 200n, wallClockSeconds: 100n, cpuGpuComputeSeconds: 50n }),
    );
    try {
      const { remainingBudget } = await delegations(token).getDelegation({ name: holder!.name });
      expect(remainingBudget).toMatchObject({ tokens: 500n, wallClockSeconds: 500n, cpuGpuComputeSeconds: 550n });
      const listed = await delegations(token).listDelegations({});
      // The holder first, then its descendants: the child, and the running attempt's own credential.
      expect(listed.delegations[0]?.name).toBe(holder!.name);
      expect(listed.delegations.map((d) => d.name)).toContain(child!.name);
      expect(Object.keys(listed.remainingBudgets).sort()).toEqual(listed.delegations.map((d) => d.name).sort());
      expect(listed.remainingBudgets[child!.name]).toMatchObject({ tokens: 300n, wallClockSeconds: 0n });
      expect(listed.remainingBudgets[holder!.name]?.tokens).toBe(500n);
      // The child sees its own, never what its parent has left.
      const own = await delegations(childToken).listDelegations({});
      expect(Object.keys(own.remainingBudgets)).toEqual([child!.name]);
      expect(await refusal(delegations(childToken).getDelegation({ name: holder!.name }))).toMatchObject({ code: Code.NotFound });
    } finally {
      await operations(token).cancelOperation({ name: operation!.name });
    }
    // Cancelled, the operation keeps only what it spent: its reservation is back.
    await waitForEnd(operations(token), operation!.name);
    expect((await delegations(token).getDelegation({ name: holder!.name })).remainingBudget?.tokens).toBe(700n);
  });

  it("never lets a child outlive its parent", async () => {
    const { delegation: parent, token } = await delegations(server.token).issueDelegation({
      subject: "short",
      scope: { ...grantOnly, mayDelegate: true },
      ttl: { seconds: 60n },
    });
    const { delegation: child } = await delegations(token).issueDelegation({ subject: "long", scope: grantOnly, ttl: { seconds: 86_400n } });
    expect(timestampDate(child!.expireTime!).getTime()).toBeLessThanOrEqual(timestampDate(parent!.expireTime!).getTime());
  });
});

describe("revoking", () => {
  it("cascades to every descendant, cancels their running operations and ends their streams", async () => {
    const { delegation: middle, token: middleToken } = await delegations(server.token).issueDelegation({
      subject: "middle",
      scope: { ...grantOnly, budget: twice(defaultConfig.defaultBudget), mayDelegate: true },
    });
    const { token: leafToken } = await delegations(middleToken).issueDelegation({
      subject: "leaf",
      scope: { ...grantOnly, budget: defaultConfig.defaultBudget },
    });
    const leafOps = operations(leafToken);
    const { operation } = await leafOps.submitOperation(execution("profiles/team-a", ["sleep", "30"]));
    await expect.poll(async () => (await leafOps.getOperation({ name: operation!.name })).operation?.state, { timeout: 10_000 }).toBe(TaskState.RUNNING);
    const stream = leafOps.watchEvents({})[Symbol.asyncIterator]();

    // A leaf cannot revoke its parent: it is not in the leaf's subtree.
    expect((await refusal(delegations(leafToken).revokeDelegation({ name: middle!.name }))).code).toBe(Code.NotFound);

    const { revokedCount } = await delegations(server.token).revokeDelegation({ name: middle!.name, reason: "rotation" });
    expect(revokedCount).toBe(3); // middle, leaf, and the running execution's own credential
    expect((await refusal(delegations(leafToken).whoAmI({}))).code).toBe(Code.Unauthenticated);
    const ended = await (async () => {
      for (;;) if ((await stream.next()).done) return undefined;
    })().catch((e: unknown) => ConnectError.from(e));
    expect(ended?.code).toBe(Code.Unauthenticated);

    const { operation: cancelled } = await waitForEnd(operations(server.token) as never, operation!.name);
    expect(cancelled).toMatchObject({ state: TaskState.CANCELLED, stopCause: { reason: StopReason.DELEGATION_REVOKED } });
    // Revoking again changes nothing.
    expect((await delegations(server.token).revokeDelegation({ name: middle!.name })).revokedCount).toBe(0);
  });
});

describe("visibility", () => {
  it("a delegation for one profile sees only that profile's operations and events", async () => {
    const root = operations(server.token);
    const { operation: other } = await root.submitOperation({
      requestId: requestId(),
      profile: "profiles/team-b",
      spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
    });
    const { token } = await delegations(server.token).issueDelegation({ subject: "viewer", scope: grantOnly });
    const viewer = operations(token);
    // Out of its scope is as if it did not exist (existence-oracles.test.ts checks the whole answer).
    expect((await refusal(viewer.getOperation({ name: other!.name }))).code).toBe(Code.NotFound);
    const listed = await viewer.listOperations({ pageSize: 1000 });
    expect(listed.operations.length).toBeGreaterThan(0);
    expect(listed.operations.every((o) => o.profile === "profiles/team-a")).toBe(true);
    const abort = new AbortController();
    const seen: string[] = [];
    const { latest } = await server.store.eventBounds();
    for await (const { kind } of viewer.watchEvents({}, { signal: abort.signal })) {
      if (kind.case === "bookmark" || (kind.case === "event" && kind.value.sequence >= latest)) break;
      if (kind.case === "event") seen.push(kind.value.operation);
    }
    abort.abort();
    const operationsSeen = await Promise.all([...new Set(seen)].map(async (name) => (await root.getOperation({ name })).operation!.profile));
    expect(operationsSeen.every((p) => p === "profiles/team-a")).toBe(true);
    expect((await refusal(viewer.listOperations({ filter: { profile: "profiles/team-b" } }))).code).toBe(Code.PermissionDenied);
  });
});

describe("listing", () => {
  it("pages the caller's subtree parents first, each delegation once in a stable order, with the budgets of each page's delegations", async () => {
    const { delegation: top, token } = await delegations(server.token).issueDelegation({
      subject: "lister",
      scope: { ...grantOnly, mayDelegate: true, budget: { tokens: 100n } },
    });
    const issued = [];
    for (const subject of ["first", "second", "third"])
      issued.push(await delegations(token).issueDelegation({ subject, scope: { ...grantOnly, mayDelegate: true, budget: { tokens: 10n } } }));
    const children = issued.map((i) => i.delegation!);
    // A grandchild, issued after every child: the listing still puts it after them all.
    const { delegation: grandchild } = await delegations(issued[0]!.token).issueDelegation({ subject: "under", scope: grantOnly });
    await delegations(token).revokeDelegation({ name: children[1]!.name });
    const pages = async (includeInactive: boolean) => {
      const listed: { names: string[]; budgets: string[] }[] = [];
      let pageToken = "";
      do {
        const page = await delegations(token).listDelegations({ includeInactive, pageSize: 2, pageToken });
        listed.push({ names: page.delegations.map((d) => d.name), budgets: Object.keys(page.remainingBudgets).sort() });
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      return listed;
    };
    const all = await pages(true);
    expect(all.flatMap((p) => p.names)).toEqual([top!.name, ...children.map((c) => c.name), grandchild!.name]);
    expect(all.map((p) => p.names.length)).toEqual([2, 2, 1]);
    for (const page of all) expect(page.budgets).toEqual([...page.names].sort());
    // Without include_inactive the revoked child is left out, and the pages still cover the rest once.
    expect((await pages(false)).flatMap((p) => p.names)).toEqual([top!.name, children[0]!.name, children[2]!.name, grandchild!.name]);
  });
});
