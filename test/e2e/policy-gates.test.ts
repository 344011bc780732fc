// Policy gates end to end, under the default bundles of examples/policies: what admission
// records when a gate allows, what a denial looks like on the wire and that it stores nothing,
// dry runs with EvaluatePolicy, and replacing a bundle with ApplyPolicyBundle (authorized by
// policy_profile_types, compiled before it is used, kept across restarts).
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { PolicyDecisionSchema, type OperationSpecSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { CallKind, type RuntimeCallSchema } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { PolicyGate, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { PolicyBundle } from "../../src/gen/agentmachine/v1/policy_pb.js";
import { bearer, mintRoot, operatorOf } from "../helpers/auth.js";
import { createProfile, operationsClient, requestId, run, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { bundleSource, denialOf, latestSequence, policyAdmin, policyClient, sha256, type PolicyClient } from "../helpers/policy.js";
import { gateName, policyGates, type Gate } from "../../src/model/policy-gates.js";
import { repoRoot, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

const EXAMPLES = join(repoRoot, "examples/policies");

type Spec = MessageInitShape<typeof OperationSpecSchema>["kind"];
const grant = (tool: string): Spec => ({ case: "toolGrantApply", value: { tool } });
const bind = (provider: string, endpoint = ""): Spec => ({ case: "modelProviderBind", value: { provider, endpoint } });
const container = (image: string, network = false): Spec => ({
  case: "containerRun",
  value: { image: `${image}@sha256:${"a".repeat(64)}`, argv: ["true"], network },
});

/** The error a call was refused with; fails the test if the call succeeded. */
async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  return error ?? expect.fail("expected a refusal, but the call succeeded");
}

/** The digest of the bundle in force for each profile type, as ListPolicyBundles reports it. */
async function digestsOf(policy: PolicyClient): Promise<Map<ProfileType, string>> {
  return new Map((await policy.listPolicyBundles({})).bundles.map((b) => [b.profileType, b.digest]));
}

async function bundleInForce(policy: PolicyClient, type: ProfileType) {
  return (await policy.listPolicyBundles({})).bundles.find((b) => b.profileType === type);
}

async function delegationName(url: string, token: string): Promise<string> {
  const who = await createClient(DelegationService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] })).whoAmI({});
  return who.delegation!.name;
}

/** Asserts `error` is the policy denial of `gate` by `rule` of the bundle with `digest`, with both typed details. */
function expectPolicyDenial(error: ConnectError, gate: string, rule: string, digest: string): void {
  expect(error.code).toBe(Code.PermissionDenied);
  const info = error.findDetails(ErrorInfoSchema)[0];
  expect(info?.reason).toBe("POLICY_DENIED");
  expect(info?.metadata).toEqual({ gate, rule, bundle_digest: digest });
  expect(error.findDetails(PolicyDecisionSchema)).toMatchObject([{ gate: policyGates.get(gate as Gate), rule, bundleDigest: digest, allowed: false }]);
}

let server: TestServer;
let client: OperationsClient;
let policy: PolicyClient;
let digests: Map<ProfileType, string>;
const profiles: Record<string, string> = {};
/** The profiles every admission test may use, by id. */
const profileTypes: Record<string, ProfileType> = {
  dev: ProfileType.PERSONAL,
  corp: ProfileType.CORPORATE_FIREWALL,
  multi: ProfileType.MULTI_CORPORATE_FIREWALL,
  local: ProfileType.LOCAL_MODEL_PROVIDER,
  hosted: ProfileType.HOSTED_MODEL_PROVIDER,
};

beforeAll(async () => {
  server = await startTestServer({ policyDir: EXAMPLES, bookmarkIntervalMs: 50 });
  client = operationsClient(server.url);
  policy = policyClient(server.url);
  digests = await digestsOf(policy);
  for (const [id, type] of Object.entries(profileTypes)) profiles[id] = await createProfile(client, id, type);
});
afterAll(() => server?.close());

describe("the bundles in force", () => {
  it("are the example bundles, one per profile type, each as its first version with the digest of its file", async () => {
    const { bundles } = await policy.listPolicyBundles({});
    expect(bundles).toHaveLength(7);
    for (const bundle of bundles) {
      const file = join(EXAMPLES, `${bundle.name.split("/")[1]}.yaml`);
      expect(bundle).toMatchObject({ version: 1n, digest: sha256(readFileSync(file, "utf8")), appliedBy: `file:${file}` });
      expect(bundle.name).toMatch(/^policyBundles\/[a-z_]+\/versions\/1$/);
    }
  });
});

describe("admission", () => {
  it("records the decision of a tool grant allowed by personal.dev-tools on the operation and on its start event", async () => {
    const digest = (await bundleInForce(policy, ProfileType.PERSONAL))!.digest;
    expect(digest).toBe(sha256(readFileSync(join(EXAMPLES, "personal.yaml"), "utf8")));
    const expected = [
      {
        gate: PolicyGate.TOOL_GRANT,
        rule: "personal.dev-tools",
        bundleDigest: digest,
        allowed: true,
        reason: "Everyday development tools may be granted and used.",
      },
    ];
    const { operation } = await client.submitOperation({ requestId: requestId(), profile: profiles.dev, spec: { kind: grant("git") } });
    expect(operation?.policyDecisions).toMatchObject(expected);
    const { events, operation: ended } = await waitForEnd(client, operation!.name);
    expect(ended.state).toBe(TaskState.COMPLETED);
    expect(ended.policyDecisions).toMatchObject(expected);
    const starts = events.filter((e) => e.attributes.case === "start");
    expect(starts).toHaveLength(1);
    expect(starts[0]!.attributes.value).toMatchObject({ policyDecisions: expected });
  });

  it("refuses a tool grant no rule allows with PermissionDenied carrying the decision, and stores nothing", async () => {
    const before = { operations: (await client.listOperations({ pageSize: 1000 })).operations.length, sequence: await latestSequence(client) };
    const request = { requestId: requestId(), profile: profiles.dev, spec: { kind: grant("curl") } };
    const error = await refusal(client.submitOperation(request));
    expectPolicyDenial(error, "toolGrant", "no-matching-allow", digests.get(ProfileType.PERSONAL)!);
    expect(error.rawMessage).toContain("toolGrant");
    expect((await client.listOperations({ pageSize: 1000 })).operations).toHaveLength(before.operations);
    expect(await latestSequence(client)).toBe(before.sequence);
    // The request id was not taken: the same request is refused again, not answered from a record.
    expect((await refusal(client.submitOperation(request))).findDetails(ErrorInfoSchema)[0]?.reason).toBe("POLICY_DENIED");
  });

  it.each<[string, string, Spec, Record<string, string>, [string, string][]]>([
    ["a corporate tool on the approved list", "corp", grant("npm"), {}, [["toolGrant", "corp.approved-tools"]]],
    ["a multi-company grant of git for a named tenant", "multi", grant("git"), { tenant: "acme" }, [["toolGrant", "multi.tenant-tools"]]],
    ["a local model runtime", "local", bind("ollama"), {}, [["modelProviderUse", "local.runtimes"]]],
    [
      "a contracted hosted provider over https",
      "hosted",
      bind("openai", "https://api.openai.example"),
      { "endpoint-scheme": "https" },
      [["modelProviderUse", "hosted.contracted"]],
    ],
    ["an execution, which no gate concerns", "dev", { case: "executionStart", value: { argv: ["true"] } }, {}, []],
  ])("admits %s, recording each gate's allowing rule", async (_what, profile, spec, labels, decisions) => {
    const { operation } = await run(client, { requestId: requestId(), profile: profiles[profile], labels, spec: { kind: spec } });
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(operation.policyDecisions.map((d) => [gateName(d.gate), d.rule, d.allowed, d.bundleDigest])).toEqual(
      decisions.map(([gate, rule]) => [gate, rule, true, digests.get(profileTypes[profile]!)]),
    );
  });

  it.each<[string, string, Spec, Record<string, string>, string, string]>([
    ["a tool the personal bundle does not list", "dev", grant("wget"), {}, "toolGrant", "no-matching-allow"],
    ["a multi-company grant without a tenant", "multi", grant("git"), {}, "toolGrant", "no-matching-allow"],
    ["a corporate tool off the approved list", "corp", grant("browser"), {}, "toolGrant", "no-matching-allow"],
    ["a hosted runtime bound in a local profile", "local", bind("openai"), {}, "modelProviderUse", "no-matching-allow"],
    [
      "a contracted provider through a plain-HTTP endpoint (hosted.https-endpoints: never bind through one)",
      "hosted",
      bind("openai", "http://api.openai.example"),
      {},
      "modelProviderUse",
      "hosted.https-endpoints",
    ],
    ["a container from outside Docker Hub's official images", "dev", container("ghcr.io/someone/tool"), {}, "containerExecution", "no-matching-allow"],
    [
      "an official container that asks for network: the second gate denies",
      "dev",
      container("docker.io/library/alpine", true),
      {},
      "networkProfile",
      "no-matching-allow",
    ],
    ["a corporate container that asks for network", "corp", container("registry.corp.example/build", true), {}, "networkProfile", "corp.no-container-egress"],
  ])("refuses %s with POLICY_DENIED naming the gate and the rule", async (_what, profile, spec, labels, gate, rule) => {
    const error = await refusal(client.submitOperation({ requestId: requestId(), profile: profiles[profile], labels, spec: { kind: spec } }));
    expectPolicyDenial(error, gate, rule, digests.get(profileTypes[profile]!)!);
  });

  it("decides the policy gates before asking for an executor: an allowed container is refused only for want of a runtime", async () => {
    const error = await refusal(
      client.submitOperation({ requestId: requestId(), profile: profiles.dev, spec: { kind: container("docker.io/library/alpine") } }),
    );
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.findDetails(ErrorInfoSchema)[0]?.reason).toBe("NO_EXECUTOR");
  });

  it("denies every gated operation of a profile type no bundle governs (rule missing-bundle), and still decides the others", async () => {
    const dir = tempDir("amctl-policies-");
    copyFileSync(join(EXAMPLES, "personal.yaml"), join(dir, "personal.yaml"));
    const lone = await startTestServer({ policyDir: dir });
    try {
      const loneClient = operationsClient(lone.url);
      const { bundles } = await policyClient(lone.url).listPolicyBundles({});
      expect(bundles.map((b) => b.profileType)).toEqual([ProfileType.PERSONAL]);
      // Creating a profile concerns no gate, so it is admitted without a bundle.
      const corp = await createProfile(loneClient, "corp", ProfileType.CORPORATE_FIREWALL);
      const error = await refusal(loneClient.submitOperation({ requestId: requestId(), profile: corp, spec: { kind: grant("git") } }));
      expectPolicyDenial(error, "toolGrant", "missing-bundle", "");
      expect(error.rawMessage).toContain("corporate_firewall");
      const dev = await createProfile(loneClient, "dev");
      const { operation } = await run(loneClient, { requestId: requestId(), profile: dev, spec: { kind: grant("git") } });
      expect(operation.policyDecisions).toMatchObject([{ rule: "personal.dev-tools", allowed: true, bundleDigest: bundles[0]!.digest }]);
    } finally {
      await lone.close();
    }
  });
});

describe("EvaluatePolicy", () => {
  it.each<[string, string, Spec, boolean, string, string, [string, string][]]>([
    ["a grant the personal bundle allows", "profiles/dev", grant("git"), true, "", "", [["toolGrant", "personal.dev-tools"]]],
    ["a grant no rule allows", "profiles/dev", grant("curl"), false, "PERMISSION_DENIED", "POLICY_DENIED", [["toolGrant", "no-matching-allow"]]],
    ["a grant in a profile that does not exist", "profiles/nope", grant("git"), false, "FAILED_PRECONDITION", "PROFILE_NOT_FOUND", []],
  ])("answers for a submit of %s as admission would decide it", async (_what, profile, spec, allowed, code, reason, decisions) => {
    const answer = await policy.evaluatePolicy({ subject: { case: "operation", value: { requestId: requestId(), profile, spec: { kind: spec } } } });
    expect(answer.allowed).toBe(allowed);
    expect(answer.decisions.map((d) => [gateName(d.gate), d.rule])).toEqual(decisions);
    expect(answer.decisions.every((d) => d.allowed === allowed && d.bundleDigest === digests.get(ProfileType.PERSONAL))).toBe(true);
    expect([denialOf(answer).code, denialOf(answer).reason]).toEqual([code, reason]);
  });

  it("answers as a submit would for a profile that already exists and for a budget that does not fit, with the message", async () => {
    const existing = await policy.evaluatePolicy({
      subject: {
        case: "operation",
        value: { requestId: requestId(), spec: { kind: { case: "profileCreate", value: { profileId: "dev", profileType: ProfileType.PERSONAL } } } },
      },
    });
    expect([existing.allowed, denialOf(existing).code, denialOf(existing).reason]).toEqual([false, "ALREADY_EXISTS", "PROFILE_EXISTS"]);
    expect(denialOf(existing).message).toContain("profiles/dev already exists");
    const tooLong = await policy.evaluatePolicy({
      subject: {
        case: "operation",
        value: {
          requestId: requestId(),
          profile: profiles.dev,
          spec: { kind: { case: "executionStart", value: { argv: ["true"] } } },
          requestedBudget: { wallClockSeconds: 1n << 50n },
        },
      },
    });
    expect([tooLong.allowed, denialOf(tooLong).code, denialOf(tooLong).reason, denialOf(tooLong).metadata.dimension]).toEqual([
      false,
      "RESOURCE_EXHAUSTED",
      "BUDGET_EXCEEDED",
      "wallClockSeconds",
    ]);
    const fits = await policy.evaluatePolicy({
      subject: {
        case: "operation",
        value: { requestId: requestId(), profile: profiles.dev, spec: { kind: { case: "executionStart", value: { argv: ["true"] } } } },
      },
    });
    expect(fits.allowed).toBe(true);
  });

  it("stores nothing and does not take the request id: the same submit afterwards creates the operation", async () => {
    const request = { requestId: requestId(), profile: profiles.dev, spec: { kind: grant("rg") } };
    const before = { operations: (await client.listOperations({ pageSize: 1000 })).operations.length, sequence: await latestSequence(client) };
    const answer = await policy.evaluatePolicy({ subject: { case: "operation", value: request } });
    expect(answer.allowed).toBe(true);
    expect((await client.listOperations({ pageSize: 1000 })).operations).toHaveLength(before.operations);
    expect(await latestSequence(client)).toBe(before.sequence);
    const submitted = await client.submitOperation(request);
    expect(submitted.created).toBe(true);
    expect(submitted.operation?.policyDecisions).toEqual(answer.decisions);
    expect((await waitForEnd(client, submitted.operation!.name)).operation.state).toBe(TaskState.COMPLETED);
  });

  describe("for a runtime call in a profile", () => {
    beforeAll(async () => {
      await run(client, { requestId: requestId(), profile: profiles.local, spec: { kind: bind("ollama") } });
      await run(client, { requestId: requestId(), profile: profiles.dev, spec: { kind: grant("make") } });
    });

    it.each<[string, MessageInitShape<typeof RuntimeCallSchema>, boolean, string, string, [string, string][]]>([
      [
        "a connector to a well-known service",
        { kind: CallKind.CONNECTOR, connector: "github" },
        true,
        "",
        "",
        [["networkProfile", "personal.known-connectors"]],
      ],
      [
        "a connector to anything else",
        { kind: CallKind.CONNECTOR, connector: "pastebin" },
        false,
        "PERMISSION_DENIED",
        "POLICY_DENIED",
        [["networkProfile", "no-matching-allow"]],
      ],
      [
        "a model call to a bound provider",
        { kind: CallKind.MODEL, modelProvider: "ollama", estimatedTokens: 1000n },
        true,
        "",
        "",
        [["modelProviderUse", "personal.bound-providers"]],
      ],
      [
        "a model call over the token ceiling",
        { kind: CallKind.MODEL, modelProvider: "ollama", estimatedTokens: 300_000n },
        false,
        "PERMISSION_DENIED",
        "POLICY_DENIED",
        [["modelProviderUse", "personal.token-ceiling"]],
      ],
      ["a model call to an unbound provider", { kind: CallKind.MODEL, modelProvider: "mystery" }, false, "FAILED_PRECONDITION", "PROFILE_SEPARATION", []],
      ["a granted tool", { kind: CallKind.TOOL, tool: "make" }, true, "", "", [["toolGrant", "personal.dev-tools"]]],
      ["a tool without a grant in the profile", { kind: CallKind.TOOL, tool: "python3" }, false, "PERMISSION_DENIED", "PROFILE_SEPARATION", []],
    ])("answers for %s", async (_what, call, allowed, code, reason, decisions) => {
      const before = await latestSequence(client);
      const answer = await policy.evaluatePolicy({ subject: { case: "call", value: { profile: profiles.dev, call } } });
      expect(answer.allowed).toBe(allowed);
      expect(answer.decisions.map((d) => [gateName(d.gate), d.rule])).toEqual(decisions);
      expect(answer.decisions.every((d) => d.bundleDigest === digests.get(ProfileType.PERSONAL))).toBe(true);
      expect([denialOf(answer).code, denialOf(answer).reason]).toEqual([code, reason]);
      expect(await latestSequence(client)).toBe(before);
    });
  });
});

describe("ApplyPolicyBundle", () => {
  let applying: TestServer;
  let applyingClient: OperationsClient;
  let dev: string;
  const submitGrant = (tool: string) => applyingClient.submitOperation({ requestId: requestId(), profile: dev, spec: { kind: grant(tool) } });
  const onlyTools = (id: string, tools: string[]) =>
    bundleSource("personal", [{ id, gate: "toolGrant", effect: "allow", when: `input.tool in ${JSON.stringify(tools)}` }]);

  beforeAll(async () => {
    applying = await startTestServer({ policyDir: EXAMPLES });
    applyingClient = operationsClient(applying.url);
    dev = await createProfile(applyingClient, "dev");
  });
  afterAll(() => applying?.close());

  it.each([
    ["lists no profile type (the full scope test servers grant)", undefined],
    ["lists only another profile type", [ProfileType.CORPORATE_FIREWALL]],
  ])("refuses a caller whose scope %s with PermissionDenied naming policy_profile_types; the bundle in force stays", async (_what, types) => {
    const token = types === undefined ? await mintRoot(await operatorOf(applying.dataDir)) : await policyAdmin(applying.dataDir, types);
    const before = await bundleInForce(policyClient(applying.url), ProfileType.PERSONAL);
    const error = await refusal(
      policyClient(applying.url, token).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: onlyTools("refused", ["rg"]) }),
    );
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "OUT_OF_SCOPE", metadata: { axis: "policy_profile_types" } });
    expect(await bundleInForce(policyClient(applying.url), ProfileType.PERSONAL)).toEqual(before);
  });

  it("applies a bundle as the next version for a caller whose scope lists the type; the new bundle decides the next submit", async () => {
    const token = await policyAdmin(applying.dataDir, [ProfileType.PERSONAL]);
    const before = (await bundleInForce(policyClient(applying.url), ProfileType.PERSONAL))!;
    const source = onlyTools("personal.rg-only", ["rg"]);
    const { bundle } = await policyClient(applying.url, token).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source });
    const version = before.version + 1n;
    expect(bundle).toMatchObject({
      name: `policyBundles/personal/versions/${version}`,
      profileType: ProfileType.PERSONAL,
      version,
      digest: sha256(source),
      source,
      appliedBy: await delegationName(applying.url, token),
    });
    expect(await bundleInForce(policyClient(applying.url), ProfileType.PERSONAL)).toEqual(bundle);
    expectPolicyDenial(await refusal(submitGrant("git")), "toolGrant", "no-matching-allow", sha256(source));
    const { operation } = await submitGrant("rg");
    expect(operation?.policyDecisions).toMatchObject([{ rule: "personal.rg-only", bundleDigest: sha256(source), allowed: true }]);
    // Other profile types keep their bundles.
    expect((await bundleInForce(policyClient(applying.url), ProfileType.CORPORATE_FIREWALL))?.version).toBe(1n);
  });

  it("refuses a bundle that does not compile with InvalidArgument naming source and the rule; the bundle in force keeps deciding", async () => {
    const admin = policyClient(applying.url, await policyAdmin(applying.dataDir, [ProfileType.PERSONAL]));
    const inForce = onlyTools("personal.git-only", ["git"]);
    const { bundle: before } = await admin.applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: inForce });
    const broken = bundleSource("personal", [
      { id: "allow-rg", gate: "toolGrant", effect: "allow", when: 'input.tool == "rg"' },
      { id: "typo", gate: "toolGrant", effect: "allow", when: 'input.tol == "git"' },
    ]);
    const error = await refusal(admin.applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: broken }));
    expect(error.code).toBe(Code.InvalidArgument);
    const violation = error.findDetails(ViolationsSchema)[0]?.violations[0];
    expect(violation?.field?.elements.map((e) => e.fieldName)).toEqual(["source"]);
    expect(violation?.message).toContain("rules[1].when");
    expect(violation?.message).toContain("tol");
    expect(await bundleInForce(policyClient(applying.url), ProfileType.PERSONAL)).toEqual(before);
    expectPolicyDenial(await refusal(submitGrant("rg")), "toolGrant", "no-matching-allow", sha256(inForce));
    expect((await submitGrant("git")).operation?.policyDecisions).toMatchObject([{ rule: "personal.git-only", bundleDigest: sha256(inForce) }]);
  });

  it("refuses a bundle that governs another profile type than the request names with InvalidArgument naming source", async () => {
    const admin = policyClient(applying.url, await policyAdmin(applying.dataDir, [ProfileType.PERSONAL, ProfileType.CORPORATE_FIREWALL]));
    const before = await digestsOf(policyClient(applying.url));
    const corporate = readFileSync(join(EXAMPLES, "corporate_firewall.yaml"), "utf8");
    const error = await refusal(admin.applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: corporate }));
    expect(error.code).toBe(Code.InvalidArgument);
    const violation = error.findDetails(ViolationsSchema)[0]?.violations[0];
    expect(violation?.field?.elements.map((e) => e.fieldName)).toEqual(["source"]);
    expect(violation?.message).toContain("profileType");
    expect(await digestsOf(policyClient(applying.url))).toEqual(before);
  });
});

describe("restart", () => {
  it("keeps an applied bundle in force across a restart without a policy directory", async () => {
    const first = await startTestServer({ policyDir: EXAMPLES });
    const source = onlyToolsBundle(["rg"]);
    let applied: PolicyBundle;
    try {
      const token = await policyAdmin(first.dataDir, [ProfileType.PERSONAL]);
      applied = (await policyClient(first.url, token).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source })).bundle!;
      expect(applied.version).toBe(2n);
    } finally {
      await first.close();
    }
    const second = await startTestServer({ dataDir: first.dataDir, policyDir: undefined });
    try {
      const { bundles } = await policyClient(second.url).listPolicyBundles({});
      expect(bundles).toHaveLength(7);
      expect(bundles.find((b) => b.profileType === ProfileType.PERSONAL)).toEqual(applied);
      const secondClient = operationsClient(second.url);
      const dev = await createProfile(secondClient, "dev");
      expectPolicyDenial(
        await refusal(secondClient.submitOperation({ requestId: requestId(), profile: dev, spec: { kind: grant("git") } })),
        "toolGrant",
        "no-matching-allow",
        sha256(source),
      );
    } finally {
      await second.close();
    }
  });

  it("re-applies a directory at start only where a file differs from the bundle in force", async () => {
    const first = await startTestServer({ policyDir: EXAMPLES });
    await first.close();
    const again = await startTestServer({ dataDir: first.dataDir, policyDir: EXAMPLES });
    try {
      const { bundles } = await policyClient(again.url).listPolicyBundles({});
      expect(bundles.map((b) => b.version)).toEqual(bundles.map(() => 1n));
    } finally {
      await again.close();
    }
  });
});

function onlyToolsBundle(tools: string[]): string {
  return bundleSource("personal", [{ id: "personal.only", gate: "toolGrant", effect: "allow", when: `input.tool in ${JSON.stringify(tools)}` }]);
}
