// Profile separation end to end: ExplainSeparation lists the rules that concern the profile
// types asked about, and each rule, broken once over real sockets, is refused where the table
// says it is enforced — at admission with the table's status code, or by AuthorizeCall with a
// denial naming the rule (whose status code PolicyService's dry run of the same call reports).
// Each refusal is set beside the same kind of action that is allowed, so no test passes by
// refusing everything.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallKind, type RuntimeCallSchema } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import type { SeparationRule } from "../../src/gen/agentmachine/v1/profile_service_pb.js";
import { ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { codeName } from "../../src/api/errors.js";
import { requestId, waitForEnd } from "../helpers/operations.js";
import {
  applyGrant,
  bindProvider,
  cancelAndWait,
  clientsFor,
  createProfileWith,
  errorInfo,
  refusal,
  startCredentialed,
  type Clients,
  type RunningExecution,
} from "../helpers/runtime.js";
import { denialOf } from "../helpers/policy.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

type CallInit = MessageInitShape<typeof RuntimeCallSchema>;

let server: TestServer;
let root: Clients;
/** Every rule, by id, as ExplainSeparation states it. */
let table: Map<string, SeparationRule>;
const profiles = { personal: "", corporate: "", multiCorporate: "", airgapped: "", other: "" };
/** One running execution per profile, holding its own execution credential. */
const running = new Map<string, RunningExecution>();

const LOCAL = "ollama";
const HOSTED = "hosted-llm";
const USER_OWNED = "my-gpu";
const model = (modelProvider: string): CallInit => ({ kind: CallKind.MODEL, modelProvider, estimatedTokens: 10n });
const connector: CallInit = { kind: CallKind.CONNECTOR, connector: "issue-tracker" };
const tool = (name: string): CallInit => ({ kind: CallKind.TOOL, tool: name });

function execIn(profile: string): RunningExecution {
  const exec = running.get(profile);
  if (exec === undefined) throw new Error(`no execution runs in ${profile}`);
  return exec;
}

async function usageOf(exec: RunningExecution) {
  return (await root.operations.getOperation({ name: exec.operation.name })).operation!.usage;
}

/** AuthorizeCall allows `call` for the execution running in `profile`. */
async function expectAllowed(profile: string, call: CallInit): Promise<void> {
  const exec = execIn(profile);
  const answer = await exec.runtime.authorizeCall({ operation: exec.operation.name, call });
  expect({ allowed: answer.allowed, denialReason: answer.denialReason }).toEqual({ allowed: true, denialReason: "" });
}

/**
 * AuthorizeCall denies `call` for the execution running in `profile` naming `rule`, charging
 * nothing; PolicyService's dry run of the call reports the rule and the table's status code.
 */
async function expectViolation(profile: string, call: CallInit, rule: string): Promise<void> {
  const exec = execIn(profile);
  const before = await usageOf(exec);
  const answer = await exec.runtime.authorizeCall({ operation: exec.operation.name, call });
  expect(answer).toMatchObject({ allowed: false, callTicket: "" });
  expect(answer.denialReason).toContain(`(rule ${rule})`);
  expect(await usageOf(exec)).toEqual(before);
  const dryRun = await root.policy.evaluatePolicy({ subject: { case: "call", value: { profile, call } } });
  expect(dryRun.allowed).toBe(false);
  expect(denialOf(dryRun)).toMatchObject({ code: table.get(rule)!.violationCode, reason: "PROFILE_SEPARATION", metadata: { rule } });
  // The task goes on: a denial for separation is not a budget exhaustion.
  expect((await root.operations.getOperation({ name: exec.operation.name })).operation?.state).toBe(TaskState.RUNNING);
}

beforeAll(async () => {
  server = await startTestServer({ maxConcurrentExecutions: 8 });
  root = clientsFor(server.url, server.token);
  table = new Map((await root.profiles.explainSeparation({})).rules.map((rule) => [rule.id, rule]));
  const ops = root.operations;
  profiles.personal = await createProfileWith(ops, "home", ProfileType.PERSONAL);
  profiles.other = await createProfileWith(ops, "home-two", ProfileType.PERSONAL);
  profiles.corporate = await createProfileWith(ops, "corp", ProfileType.CORPORATE_FIREWALL);
  profiles.multiCorporate = await createProfileWith(ops, "multi-corp", ProfileType.MULTI_CORPORATE_FIREWALL);
  profiles.airgapped = await createProfileWith(ops, "vault", ProfileType.AIRGAPPED_LOCAL_ONLY);
  await bindProvider(ops, await createProfileWith(ops, "local-models", ProfileType.LOCAL_MODEL_PROVIDER), LOCAL);
  await bindProvider(ops, await createProfileWith(ops, "hosted-models", ProfileType.HOSTED_MODEL_PROVIDER), HOSTED);
  await bindProvider(ops, await createProfileWith(ops, "own-models", ProfileType.USER_OWNED_MODEL), USER_OWNED);
  const started = await Promise.all(
    [profiles.personal, profiles.corporate, profiles.multiCorporate, profiles.airgapped].map((p) => startCredentialed(server.url, server.dataDir, ops, p)),
  );
  for (const exec of started) running.set(exec.operation.profile, exec);
});
afterAll(async () => {
  await Promise.all([...running.values()].map((exec) => cancelAndWait(root.operations, exec.operation.name)));
  await server.close();
});

describe("ExplainSeparation", () => {
  const everyProfile = () => [...table.values()].filter((rule) => rule.profileTypes.length === 0).map((rule) => rule.id);

  it("states every rule with where it is enforced and the status code a violation gets", () => {
    expect([...table.keys()]).toEqual(
      expect.arrayContaining([
        "commands-stay-in-their-profile",
        "tool-use-needs-grant-in-profile",
        "provider-binding-targets-provider-profiles",
        "model-calls-need-a-binding",
        "airgapped-no-network",
        "airgapped-local-models-only",
        "firewall-no-user-owned-models",
      ]),
    );
    for (const rule of table.values()) {
      expect(rule.description).not.toBe("");
      expect(rule.enforcedAt.length).toBeGreaterThan(0);
      expect([codeName(Code.PermissionDenied), codeName(Code.FailedPrecondition)]).toContain(rule.violationCode);
    }
  });

  it("for personal and corporate_firewall lists only what keeps them apart: the rules for every profile", async () => {
    const { rules } = await root.profiles.explainSeparation({ profileTypes: [ProfileType.PERSONAL, ProfileType.CORPORATE_FIREWALL] });
    const ids = rules.map((rule) => rule.id);
    expect(everyProfile().length).toBeGreaterThan(0);
    expect(ids).toEqual(everyProfile());
    expect(ids).not.toContain("firewall-no-user-owned-models");
    expect(ids).not.toContain("airgapped-no-network");
    expect(ids).not.toContain("airgapped-local-models-only");
    // In the table's stable order.
    expect(ids).toEqual([...table.keys()].filter((id) => ids.includes(id)));
  });

  it("for corporate_firewall and user_owned_model lists the rule that keeps them apart", async () => {
    const { rules } = await root.profiles.explainSeparation({ profileTypes: [ProfileType.CORPORATE_FIREWALL, ProfileType.USER_OWNED_MODEL] });
    expect(rules.map((rule) => rule.id)).toEqual([...everyProfile(), "firewall-no-user-owned-models"]);
  });

  it("for airgapped_local_only lists the rules for every profile and both airgapped rules, not the firewall's", async () => {
    const { rules } = await root.profiles.explainSeparation({ profileTypes: [ProfileType.AIRGAPPED_LOCAL_ONLY] });
    const ids = rules.map((rule) => rule.id);
    expect(ids).toEqual(expect.arrayContaining([...everyProfile(), "airgapped-no-network", "airgapped-local-models-only"]));
    expect(ids).not.toContain("firewall-no-user-owned-models");
  });
});

describe("runtime calls", () => {
  it("an airgapped_local_only profile makes no connector call (airgapped-no-network)", async () => {
    await expectAllowed(profiles.personal, connector);
    await expectViolation(profiles.airgapped, connector, "airgapped-no-network");
  });

  it.each([
    ["hosted_model_provider", HOSTED],
    ["user_owned_model", USER_OWNED],
  ])("an airgapped_local_only profile never calls a provider bound in a %s profile, only local ones (airgapped-local-models-only)", async (_type, provider) => {
    await expectAllowed(profiles.airgapped, model(LOCAL));
    await expectViolation(profiles.airgapped, model(provider), "airgapped-local-models-only");
  });

  it.each([
    ["corporate_firewall", "corporate"],
    ["multi_corporate_firewall", "multiCorporate"],
  ] as const)("a %s profile never calls a provider bound in a user_owned_model profile (firewall-no-user-owned-models)", async (_type, key) => {
    await expectAllowed(profiles[key], model(HOSTED));
    await expectViolation(profiles[key], model(USER_OWNED), "firewall-no-user-owned-models");
    await expectAllowed(profiles.personal, model(USER_OWNED));
  });

  it.each([
    ["airgapped_local_only", "airgapped", "hosted-models", "airgapped-local-models-only"],
    ["corporate_firewall", "corporate", "own-models", "firewall-no-user-owned-models"],
  ] as const)(
    "%s: a provider bound in a profile it may not call stays forbidden when it is later bound in a local_model_provider profile too",
    async (_type, key, forbiddenProfile, rule) => {
      const provider = `dual-${key}`;
      await bindProvider(root.operations, `profiles/${forbiddenProfile}`, provider);
      await expectViolation(profiles[key], model(provider), rule);
      await bindProvider(root.operations, "profiles/local-models", provider);
      await expectViolation(profiles[key], model(provider), rule);
    },
  );

  it("a model call names a provider bound in a provider profile (model-calls-need-a-binding)", async () => {
    await expectViolation(profiles.personal, model("nobody-bound-this"), "model-calls-need-a-binding");
  });

  it("a tool is used only under an applied, unrevoked grant of the profile itself (tool-use-needs-grant-in-profile)", async () => {
    await expectViolation(profiles.personal, tool("git"), "tool-use-needs-grant-in-profile");
    // A grant in another profile does not serve this one.
    await applyGrant(root.operations, profiles.corporate, "git");
    await expectAllowed(profiles.corporate, tool("git"));
    await expectViolation(profiles.personal, tool("git"), "tool-use-needs-grant-in-profile");
    // Its own grant does, until it is revoked.
    const grant = await applyGrant(root.operations, profiles.personal, "git");
    await expectAllowed(profiles.personal, tool("git"));
    const { operation: revoke } = await root.operations.submitOperation({
      requestId: requestId("revoke"),
      profile: profiles.personal,
      spec: { kind: { case: "toolGrantRevoke", value: { grant } } },
    });
    expect((await waitForEnd(root.operations, revoke!.name)).operation.state).toBe(TaskState.COMPLETED);
    await expectViolation(profiles.personal, tool("git"), "tool-use-needs-grant-in-profile");
  });
});

describe("admission", () => {
  /** Submits `request` and expects the rule's refusal with the table's status code; nothing is stored. */
  async function expectRefused(request: Parameters<Clients["operations"]["submitOperation"]>[0], rule: string): Promise<void> {
    const error = await refusal(root.operations.submitOperation(request));
    expect(codeName(error.code)).toBe(table.get(rule)!.violationCode);
    expect(errorInfo(error)).toMatchObject({ reason: "PROFILE_SEPARATION", metadata: { rule } });
    const again = await refusal(root.operations.submitOperation(request));
    expect(again.code).toBe(error.code); // not "already exists": the first was not stored
  }

  it("model_provider.bind into a personal profile is refused FailedPrecondition (provider-binding-targets-provider-profiles)", async () => {
    const bind = (profile: string) => ({
      requestId: requestId("bind"),
      profile,
      spec: { kind: { case: "modelProviderBind" as const, value: { provider: "stray" } } },
    });
    await expectRefused(bind(profiles.personal), "provider-binding-targets-provider-profiles");
    expect(table.get("provider-binding-targets-provider-profiles")?.violationCode).toBe("FAILED_PRECONDITION");
    // Nothing was bound: the provider is still unknown to model calls.
    await expectViolation(profiles.personal, model("stray"), "model-calls-need-a-binding");
  });

  it("a cancel of an execution in another profile is refused FailedPrecondition and the execution runs on (commands-stay-in-their-profile)", async () => {
    const target = execIn(profiles.personal).operation.name;
    const cancel = { requestId: requestId("cancel"), profile: profiles.other, spec: { kind: { case: "executionCancel" as const, value: { target } } } };
    await expectRefused(cancel, "commands-stay-in-their-profile");
    expect(table.get("commands-stay-in-their-profile")?.violationCode).toBe("FAILED_PRECONDITION");
    expect((await root.operations.getOperation({ name: target })).operation?.state).toBe(TaskState.RUNNING);
  });
});
