// `amctl policy check | list | apply`, `amctl profile explain`, `amctl call` and the bundles
// `amctl init` writes, as child processes against a real server governed by the default
// bundles of examples/policies: the verdicts a person reads, the JSON a script parses, the
// exit codes both rely on, and `amctl call` run by an agent inside a real execution.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../../src/model/mapping.js";
import { fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { amctl, type CliResult } from "../helpers/cli.js";
import { createProfile, execution, operationsClient, requestId, run, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { repoRoot, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

const EXAMPLES = join(repoRoot, "examples/policies");
const AMCTL = join(repoRoot, "bin/amctl.mjs");
/** Tests that start several amctl processes one after another (each pays Node and tsx start-up). */
const SLOW = 60_000;
const ALL_PROFILE_TYPES = [...profileTypeNames.keys()];

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");
const exampleDigest = (file: string): string => sha256(readFileSync(join(EXAMPLES, file), "utf8"));

/** A bundle whose only rule does not compile: `when` is not CEL. */
const BROKEN_BUNDLE = "profileType: corporate_firewall\nrules:\n  - id: broken\n    gate: toolGrant\n    effect: allow\n    when: input.tool ==\n";

let server: TestServer;
let client: OperationsClient;
/** What amctl needs to call the test server: its address, and a credential in AMCTL_TOKEN. */
let env: NodeJS.ProcessEnv;
let cli: (...args: string[]) => Promise<CliResult>;

function expectExit(result: CliResult, code: number): void {
  expect(result, `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toMatchObject({ code });
}

beforeAll(async () => {
  server = await startTestServer({ policyDir: EXAMPLES });
  client = operationsClient(server.url);
  env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token };
  cli = (...args) => amctl(args, env);
  await createProfile(client, "dev", ProfileType.PERSONAL);
  await createProfile(client, "models", ProfileType.LOCAL_MODEL_PROVIDER);
  const bound = await run(client, {
    requestId: requestId("bind"),
    profile: "profiles/models",
    spec: { kind: { case: "modelProviderBind", value: { provider: "ollama" } } },
  });
  expect(bound.operation.state).toBe(TaskState.COMPLETED);
});
afterAll(() => server.close());

describe("amctl policy check", () => {
  it("an operation the gates allow: exit 0, the gate, the rule that allowed it and its bundle", async () => {
    const result = await cli("policy", "check", "--profile", "dev", "--grant-tool", "git");
    expectExit(result, 0);
    expect(result.stdout).toMatch(/^allowed$/m);
    expect(result.stdout).toMatch(/^GATE +DECISION +RULE +BUNDLE +REASON$/m);
    expect(result.stdout).toMatch(
      new RegExp(`^toolGrant +allow +personal\\.dev-tools +${exampleDigest("personal.yaml").slice(0, 12)} +Everyday development tools`, "m"),
    );
  });

  it("an operation a gate denies: exit 1, the denial, the gate and the rule; nothing is stored", async () => {
    const result = await cli("policy", "check", "--profile", "dev", "--grant-tool", "nmap");
    expectExit(result, 1);
    expect(result.stdout).toMatch(/^denied: PERMISSION_DENIED POLICY_DENIED: the toolGrant gate denied this: rule no-matching-allow: .*$/m);
    expect(result.stdout).toMatch(/^toolGrant +deny +no-matching-allow +[0-9a-f]{12} +no allow rule of the toolGrant gate matched$/m);
    const grants = await client.listOperations({ filter: { types: [OperationType.TOOL_GRANT_APPLY] } });
    expect(grants.operations).toEqual([]);
  });

  it("--json prints the EvaluatePolicyResponse, whole digests included", async () => {
    const result = await cli("policy", "check", "--json", "--profile", "dev", "--grant-tool", "nmap");
    expectExit(result, 1);
    expect(JSON.parse(result.stdout)).toMatchObject({
      denial: {
        code: Code.PermissionDenied,
        details: expect.arrayContaining([
          {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            reason: "POLICY_DENIED",
            domain: "agentmachine.v1",
            metadata: expect.objectContaining({ gate: "toolGrant", rule: "no-matching-allow" }),
          },
        ]),
      },
      decisions: [{ gate: "POLICY_GATE_TOOL_GRANT", rule: "no-matching-allow", bundleDigest: exampleDigest("personal.yaml") }],
    });
    expect(JSON.parse(result.stdout).allowed).toBeUndefined(); // proto JSON leaves out false
  });

  it(
    "--call checks a runtime call in a profile: allowed, denied by a gate, denied by a separation rule",
    async () => {
      const allowed = await cli("policy", "check", "--call", "model", "--profile", "dev", "--provider", "ollama", "--tokens", "500");
      expectExit(allowed, 0);
      expect(allowed.stdout).toMatch(/^modelProviderUse +allow +personal\.bound-providers /m);

      const tooMany = await cli("policy", "check", "--call", "model", "--profile", "dev", "--provider", "ollama", "--tokens", "300000");
      expectExit(tooMany, 1);
      expect(tooMany.stdout).toMatch(/^modelProviderUse +deny +personal\.token-ceiling +[0-9a-f]{12} +No single model call/m);

      // No gate decides this one: the denial's message names the separation rule.
      const unbound = await cli("policy", "check", "--call", "model", "--profile", "dev", "--provider", "nowhere");
      expectExit(unbound, 1);
      expect(unbound.stdout.trim()).toBe(
        "denied: FAILED_PRECONDITION PROFILE_SEPARATION: model provider nowhere is not bound in any provider profile (rule model-calls-need-a-binding)",
      );
    },
    SLOW,
  );

  it(
    "flags of an operation and of a call do not mix: a usage error, exit 2",
    async () => {
      const mixed = await cli("policy", "check", "--call", "tool", "--profile", "dev", "--tool", "git", "--grant-tool", "git");
      expectExit(mixed, 2);
      expect(mixed.stderr).toContain("--call checks a runtime call, not an operation: drop --grant-tool");
      const noCall = await cli("policy", "check", "--profile", "dev", "--provider", "ollama");
      expectExit(noCall, 2);
      expect(noCall.stderr).toContain("--provider describe a runtime call: add --call");
      const wrongTarget = await cli("policy", "check", "--call", "connector", "--profile", "dev", "--connector", "github", "--tokens", "5");
      expectExit(wrongTarget, 2);
      expect(wrongTarget.stderr).toContain("a connector call takes no --tokens");
    },
    SLOW,
  );
});

describe("amctl policy list and apply", () => {
  it(
    "list shows the bundle in force for every profile type; --json the whole bundles",
    async () => {
      const result = await cli("policy", "list");
      expectExit(result, 0);
      expect(result.stdout).toMatch(/^PROFILE TYPE +VERSION +DIGEST +APPLIED BY +APPLIED$/m);
      const personalRow = result.stdout
        .split("\n")
        .find((line) => line.startsWith("personal "))
        ?.split(/ +/);
      expect(personalRow).toEqual([
        "personal",
        "1",
        exampleDigest("personal.yaml").slice(0, 12),
        `file:${join(EXAMPLES, "personal.yaml")}`,
        expect.stringMatching(/^\d{4}-/),
      ]);
      const json = await cli("policy", "list", "--json");
      const { bundles } = JSON.parse(json.stdout) as { bundles: { profileType: string; digest: string; source: string }[] };
      expect(bundles).toHaveLength(7);
      const personal = bundles.find((b) => b.profileType === "PROFILE_TYPE_PERSONAL");
      expect(personal).toMatchObject({ digest: exampleDigest("personal.yaml"), source: readFileSync(join(EXAMPLES, "personal.yaml"), "utf8") });
    },
    SLOW,
  );

  it(
    "apply needs a delegation that may change the profile type's policy; then prints the new version and digest",
    async () => {
      const file = join(tempDir("amctl-policy-"), "corporate.yaml");
      const source = readFileSync(join(EXAMPLES, "corporate_firewall.yaml"), "utf8").replace(/^(# .*)$/m, "$1 (applied by the test)");
      writeFileSync(file, source);

      const refused = await cli("policy", "apply", "--profile-type", "corporate_firewall", file);
      expectExit(refused, 1);
      expect(refused.stderr).toMatch(/^amctl: PermissionDenied: delegations\/\S+ does not allow changing the corporate_firewall policy bundle$/m);

      const admin = await mintRoot(await operatorOf(server.dataDir), { scope: { ...fullScope, policyProfileTypes: ALL_PROFILE_TYPES } });
      const applied = await amctl(["policy", "apply", "--profile-type", "corporate_firewall", file], { ...env, AMCTL_TOKEN: admin });
      expectExit(applied, 0);
      expect(applied.stdout.trim()).toBe(`corporate_firewall: version 2, digest ${sha256(source)} (policyBundles/corporate_firewall/versions/2)`);
      expect((await cli("policy", "list")).stdout).toMatch(new RegExp(`^corporate_firewall +2 +${sha256(source).slice(0, 12)} +delegations/`, "m"));
    },
    SLOW,
  );

  it(
    "a bundle that does not compile is refused naming the rule, and the bundle in force stays",
    async () => {
      const before = JSON.parse((await cli("policy", "list", "--json")).stdout) as unknown;
      const file = join(tempDir("amctl-policy-"), "broken.yaml");
      writeFileSync(file, BROKEN_BUNDLE);
      const admin = await mintRoot(await operatorOf(server.dataDir), { scope: { ...fullScope, policyProfileTypes: ALL_PROFILE_TYPES } });
      const result = await amctl(["policy", "apply", "--profile-type", "corporate_firewall", file], { ...env, AMCTL_TOKEN: admin });
      expectExit(result, 1);
      expect(result.stderr).toMatch(/^amctl: InvalidArgument: source: rules\[0\]\.when: /m);
      expect(JSON.parse((await cli("policy", "list", "--json")).stdout)).toEqual(before);

      const missing = await cli("policy", "apply", "--profile-type", "personal", join(tempDir(), "nothing.yaml"));
      expectExit(missing, 2);
      expect(missing.stderr).toMatch(/cannot read .*nothing\.yaml: ENOENT/);
    },
    SLOW,
  );

  it(
    "a root signed with amctl delegation root may apply every profile type's bundle; an issued child only those it names",
    async () => {
      const root = await cli("delegation", "root", "--data-dir", server.dataDir, "--may-delegate");
      expectExit(root, 0);
      const rootEnv = { ...env, AMCTL_TOKEN: root.stdout.trim() };
      const file = join(tempDir("amctl-policy-"), "airgapped.yaml");
      writeFileSync(file, `${readFileSync(join(EXAMPLES, "airgapped_local_only.yaml"), "utf8")}# reapplied\n`);
      expectExit(await amctl(["policy", "apply", "--profile-type", "airgapped_local_only", file], rootEnv), 0);

      const child = await amctl(["delegation", "issue", "--subject", "policy-editor", "--policy-profile-type", "personal"], rootEnv);
      expectExit(child, 0);
      const childEnv = { ...env, AMCTL_TOKEN: child.stdout.trim() };
      const refused = await amctl(["policy", "apply", "--profile-type", "airgapped_local_only", file], childEnv);
      expectExit(refused, 1);
      expect(refused.stderr).toContain("does not allow changing the airgapped_local_only policy bundle");
      expect((await amctl(["whoami"], childEnv)).stdout).toMatch(/policy of: personal$/m);
    },
    2 * SLOW,
  );
});

describe("amctl profile explain", () => {
  it("prints the separation rules that concern a profile type, each with where it is enforced", async () => {
    const result = await cli("profile", "explain", "airgapped_local_only");
    expectExit(result, 0);
    expect(result.stdout).toMatch(/^airgapped-no-network {2}\(violation: PERMISSION_DENIED\)$/m);
    expect(result.stdout).toMatch(/^ {2}profile types: airgapped_local_only$/m);
    expect(result.stdout).toMatch(/^ {2}enforced at: +SubmitOperation \(container\.run\); RuntimeService\.AuthorizeCall \(connector calls\)$/m);
    expect(result.stdout).toMatch(/^ {2}profile types: every profile type$/m);
    expect(result.stdout).not.toContain("firewall-no-user-owned-models");
  });

  it(
    "--json prints the rules; no type means every rule; an unknown type is a usage error",
    async () => {
      const one = JSON.parse((await cli("profile", "explain", "--json", "corporate_firewall")).stdout) as { rules: { id: string; profileTypes?: string[] }[] };
      expect(one.rules.map((rule) => rule.id)).toContain("firewall-no-user-owned-models");
      for (const rule of one.rules) expect(rule.profileTypes ?? ["PROFILE_TYPE_CORPORATE_FIREWALL"]).toContain("PROFILE_TYPE_CORPORATE_FIREWALL");
      const all = JSON.parse((await cli("profile", "explain", "--json")).stdout) as { rules: unknown[] };
      expect(all.rules.length).toBeGreaterThan(one.rules.length);
      const unknown = await cli("profile", "explain", "office");
      expectExit(unknown, 2);
      expect(unknown.stderr).toContain("must be one of personal, corporate_firewall");
    },
    SLOW,
  );
});

describe("amctl init", () => {
  it("does not add a default for a profile type an operator's bundle already governs under another name", async () => {
    const dataDir = tempDir("amctl-init-own-");
    mkdirSync(join(dataDir, "policies"));
    writeFileSync(join(dataDir, "policies/mine.yaml"), readFileSync(join(EXAMPLES, "personal.yaml"), "utf8"));
    const result = await amctl(["init", "--data-dir", dataDir]);
    expectExit(result, 0);
    expect(readdirSync(join(dataDir, "policies"))).not.toContain("personal.yaml");
    expect(readdirSync(join(dataDir, "policies"))).toHaveLength(7);
    expect(result.stdout).toContain(`policy bundle: ${join(dataDir, "policies/mine.yaml")}  (already there, kept)`);
  });

  it(
    "copies the default bundles into DATA_DIR/policies, keeps files already there, and serve applies them",
    async () => {
      const dataDir = tempDir("amctl-init-policies-");
      mkdirSync(join(dataDir, "policies"));
      const own = `${readFileSync(join(EXAMPLES, "personal.yaml"), "utf8")}# the operator's own\n`;
      writeFileSync(join(dataDir, "policies/personal.yaml"), own);

      const result = await amctl(["init", "--data-dir", dataDir]);
      expectExit(result, 0);
      const examples = readdirSync(EXAMPLES)
        .filter((name) => name.endsWith(".yaml"))
        .sort();
      expect(readdirSync(join(dataDir, "policies")).sort()).toEqual(examples);
      for (const file of examples.filter((name) => name !== "personal.yaml")) {
        expect(result.stdout).toContain(`policy bundle: ${join(dataDir, "policies", file)}\n`);
        expect(readFileSync(join(dataDir, "policies", file), "utf8")).toBe(readFileSync(join(EXAMPLES, file), "utf8"));
      }
      expect(result.stdout).toContain(`policy bundle: ${join(dataDir, "policies/personal.yaml")}  (already there, kept)`);
      expect(readFileSync(join(dataDir, "policies/personal.yaml"), "utf8")).toBe(own);

      // Without --policy the server applies DATA_DIR/policies.
      const served = await startTestServer({ dataDir, policyDir: undefined });
      try {
        const list = await amctl(["policy", "list", "--json"], { AMCTL_SERVER: served.url, AMCTL_TOKEN: served.token });
        const { bundles } = JSON.parse(list.stdout) as { bundles: { profileType: string; digest: string; appliedBy: string }[] };
        expect(bundles).toHaveLength(7);
        expect(bundles.find((b) => b.profileType === "PROFILE_TYPE_PERSONAL")).toMatchObject({
          digest: sha256(own),
          appliedBy: `file:${join(dataDir, "policies/personal.yaml")}`,
        });
      } finally {
        await served.close();
      }
    },
    SLOW,
  );
});

describe("amctl call, inside an execution", () => {
  /** Runs `argv` as an execution in profiles/dev and follows it to its end. */
  async function executed(argv: string[]) {
    const { operation } = await client.submitOperation(execution("profiles/dev", argv));
    return (await waitForEnd(client, operation!.name, SLOW)).operation;
  }

  it(
    "call model is allowed and charged to the execution's budget: one model call, the estimated tokens",
    async () => {
      const operation = await executed([process.execPath, AMCTL, "call", "model", "--provider", "ollama", "--tokens", "10"]);
      expect(operation.state, JSON.stringify(operation.stopCause)).toBe(TaskState.COMPLETED);
      expect(operation.usage).toMatchObject({ modelCalls: 1n, tokens: 10n, connectorCalls: 0n });
    },
    SLOW,
  );

  it(
    "call report reconciles the estimate with the tokens really used",
    async () => {
      // In the repo, not a temp dir: the sandbox shows the install, not the host's /tmp.
      const script = join(repoRoot, "test/fixtures/call-report-agent.cjs");
      const operation = await executed([process.execPath, script, AMCTL]);
      expect(operation.state, JSON.stringify(operation.stopCause)).toBe(TaskState.COMPLETED);
      expect(operation.usage).toMatchObject({ modelCalls: 1n, tokens: 7n });
    },
    SLOW,
  );

  it(
    "a denied call exits 1, so the agent's execution fails, and nothing is charged",
    async () => {
      const operation = await executed([process.execPath, AMCTL, "call", "model", "--provider", "nowhere", "--tokens", "10"]);
      expect(operation.state).toBe(TaskState.FAILED);
      expect(operation.stopCause?.message).toBe("process exited with code 1");
      expect(operation.usage?.modelCalls ?? 0n).toBe(0n);
    },
    SLOW,
  );

  it(
    "outside an execution: no operation is a usage error; another credential is refused",
    async () => {
      const none = await cli("call", "tool", "--tool", "git");
      expectExit(none, 2);
      expect(none.stderr).toContain("required option '--operation <operation>' not specified");
      const { operation } = await client.submitOperation(execution("profiles/dev", ["sleep", "30"]));
      try {
        const refused = await cli("call", "tool", "--tool", "git", "--operation", operation!.name);
        expectExit(refused, 1);
        expect(refused.stderr).toMatch(/^amctl: PermissionDenied: delegations\/\S+ is not the execution credential of operations\/\S+$/m);
      } finally {
        await client.cancelOperation({ name: operation!.name });
        await waitForEnd(client, operation!.name);
      }
    },
    SLOW,
  );
});
