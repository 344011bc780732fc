// Every create is idempotent (issue 16): IssueDelegation and ApplyPolicyBundle take a request_id
// scoped to the caller's delegation, as SubmitOperation's. On both stores over real sockets: a
// retried IssueDelegation carves the parent's budget once and gets the same child and credential
// back; a retried ApplyPolicyBundle stores no second version and leaves the bundle in force
// alone; a key reused with another body is AlreadyExists naming what it made; and an attacker who
// sends a victim's request id (with the victim's body) gets a child or bundle of its own, never
// the victim's, nor its credential.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationType, ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { bundleSource } from "../helpers/policy.js";
import { clientsFor, refusal, type Clients } from "../helpers/runtime.js";
import { storesUnderTest } from "../helpers/scoped-callers.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const childScope = { operationTypes: [OperationType.TOOL_GRANT_APPLY], profiles: ["*"], tools: ["git"], budget: { tokens: 1000n } };
const personalBundle = (tool: string) =>
  bundleSource("personal", [{ id: `allow-${tool}`, gate: "toolGrant", effect: "allow", when: `input.tool == "${tool}"` }]);

describe.each(storesUnderTest())("%s", (_store, storeOf) => {
  let server: TestServer;
  /** Two callers, each a child of the operator's root that may delegate and change personal bundles. */
  let victim: Clients;
  let attacker: Clients;
  let victimName: string;

  beforeAll(async () => {
    const store = await storeOf();
    server = await startTestServer(store === undefined ? {} : { store });
    const root = clientsFor(
      server.url,
      await mintRoot(await operatorOf(server.dataDir), { subject: "root", scope: { ...fullScope, policyProfileTypes: [ProfileType.PERSONAL] } }),
    );
    const caller = async (subject: string) => {
      const issued = await root.delegations.issueDelegation({
        subject,
        scope: {
          operationTypes: [OperationType.TOOL_GRANT_APPLY],
          profiles: ["*"],
          tools: ["*"],
          mayDelegate: true,
          budget: { tokens: 10_000n },
          policyProfileTypes: [ProfileType.PERSONAL],
        },
      });
      return { clients: clientsFor(server.url, issued.token), name: issued.delegation!.name };
    };
    const v = await caller("victim");
    victim = v.clients;
    victimName = v.name;
    attacker = (await caller("attacker")).clients;
  });
  afterAll(() => server?.close());

  const remainingTokens = async (clients: Clients) => {
    const { delegation } = await clients.delegations.whoAmI({});
    return (await clients.delegations.getDelegation({ name: delegation!.name })).remainingBudget?.tokens;
  };

  it("a retried IssueDelegation returns the same child and credential, and carves the parent's budget once", async () => {
    const before = await remainingTokens(victim);
    const request = { requestId: "issue-1", subject: "helper", scope: childScope };
    const first = await victim.delegations.issueDelegation(request);
    const retries = await Promise.all([1, 2, 3].map(() => victim.delegations.issueDelegation(request)));
    expect(first.created).toBe(true);
    for (const retry of retries) {
      expect(retry).toMatchObject({ created: false, delegation: { name: first.delegation!.name }, token: first.token });
    }
    expect(await remainingTokens(victim)).toBe(before! - 1000n);
    const { delegations } = await victim.delegations.listDelegations({ pageSize: 1000 });
    expect(delegations.filter((d) => d.subject === "helper")).toHaveLength(1);
    // The credential works: it is the child's.
    expect((await clientsFor(server.url, retries[0]!.token).delegations.whoAmI({})).delegation?.name).toBe(first.delegation!.name);
  });

  it("a request id reused with another IssueDelegation body is AlreadyExists naming the first child, and nothing is carved", async () => {
    const first = await victim.delegations.issueDelegation({ requestId: "issue-2", subject: "one", scope: childScope });
    const before = await remainingTokens(victim);
    const error = await refusal(victim.delegations.issueDelegation({ requestId: "issue-2", subject: "two", scope: childScope }));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({
      reason: "REQUEST_ID_REUSED",
      metadata: { request_id: "issue-2", delegation: first.delegation!.name },
    });
    expect(error.rawMessage).not.toContain(first.token);
    expect(await remainingTokens(victim)).toBe(before);
  });

  it("an attacker who sends the victim's request id and body gets a child of its own, never the victim's or its credential", async () => {
    const request = { requestId: "issue-3", subject: "shared-name", scope: childScope };
    const victims = await victim.delegations.issueDelegation(request);
    const attackers = await attacker.delegations.issueDelegation(request);
    expect(attackers.created).toBe(true);
    expect(attackers.delegation!.name).not.toBe(victims.delegation!.name);
    expect(attackers.delegation!.parent).not.toBe(victimName);
    expect(attackers.token).not.toBe(victims.token);
    // And the victim's retry still gets its own.
    expect((await victim.delegations.issueDelegation(request)).delegation!.name).toBe(victims.delegation!.name);
  });

  it("a retried ApplyPolicyBundle stores no second version, and leaves a bundle applied since in force", async () => {
    const request = { requestId: "bundle-1", profileType: ProfileType.PERSONAL, source: personalBundle("git") };
    const first = await victim.policy.applyPolicyBundle(request);
    expect(first.created).toBe(true);
    const later = await victim.policy.applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: personalBundle("make") });
    const retry = await victim.policy.applyPolicyBundle(request);
    expect(retry).toMatchObject({ created: false, bundle: { name: first.bundle!.name, version: first.bundle!.version, digest: first.bundle!.digest } });
    const inForce = (await victim.policy.listPolicyBundles({})).bundles.find((b) => b.profileType === ProfileType.PERSONAL);
    expect(inForce?.name).toBe(later.bundle!.name);
    // Reused with another body: AlreadyExists naming the version it stored.
    const error = await refusal(victim.policy.applyPolicyBundle({ ...request, source: personalBundle("curl") }));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "REQUEST_ID_REUSED", metadata: { policy_bundle: first.bundle!.name } });
    // The victim's key answers only the victim: the attacker's same request stores a version of its own.
    const attackers = await attacker.policy.applyPolicyBundle(request);
    expect(attackers.created).toBe(true);
    expect(attackers.bundle!.version).toBeGreaterThan(later.bundle!.version);
  });
});
