// The redaction pipeline of diagnostics bundles, piece by piece: the shape detectors find every
// format and nothing benign (a clean bundle's own text must pass the final scan); known values
// are found in every encoding; the allowlists redact whatever they do not list; and the final
// scan of the packed bytes fails an export that a narrower field pass let through — the seam
// the end-to-end test cannot reach.
import { gzipSync } from "node:zlib";
import { create, toJson } from "@bufbuild/protobuf";
import { SignJWT } from "jose";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { StopReason, OperationSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, PolicyGate, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { operationAllowlist, project, urlOrigin } from "../../src/diagnostics/allowlist.js";
import { decompress, packArchive, tarOf, untar } from "../../src/diagnostics/archive.js";
import type { BundleFile } from "../../src/diagnostics/assemble.js";
import { REDACTED, RAW, type Detector } from "../../src/diagnostics/detector.js";
import { defaultDetectors, distinctive, secretEnvValues } from "../../src/diagnostics/detectors.js";
import { exportBundle, type BundleMeta } from "../../src/diagnostics/export-bundle.js";
import { entropyBits, promptFieldDetector, secretFieldEntropyDetector } from "../../src/diagnostics/field-detectors.js";
import { finalScan } from "../../src/diagnostics/final-scan.js";
import { knownValuesDetector } from "../../src/diagnostics/known-values.js";
import { buildManifest } from "../../src/diagnostics/manifest.js";
import { issuedCredentialDetector, shapeDetectors } from "../../src/diagnostics/pattern-detectors.js";
import { projectConfig } from "../../src/diagnostics/project-config.js";
import { projectLogLine } from "../../src/diagnostics/project-logs.js";
import { redactJson } from "../../src/diagnostics/redact.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { encodingsOf, envValueCanaries, pemCanaries, shapedCanaries } from "../helpers/canaries.js";

const KEY_ID = "k".repeat(43);
const full = defaultDetectors({ credentialKeyIds: [KEY_ID], localSecrets: [], envSecrets: [] });
const byId = (id: string): Detector => full.find((d) => d.id === id) ?? expect.fail(`no detector ${id}`);
const findsIn = (text: string): string[] => full.filter((d) => d.find(text, RAW).length > 0).map((d) => d.id);

describe("shape detectors", () => {
  const shaped = shapedCanaries(3);
  const expected: Record<string, string> = {
    "aws-access-key-id": "aws-access-key",
    "aws-temporary-key-id": "aws-access-key",
    "aws-secret-access-key": "secret-assignment",
    "github-classic-token": "github-token",
    "github-fine-grained-token": "github-token",
    "slack-bot-token": "slack-token",
    "slack-webhook": "slack-token",
    "openai-project-key": "openai-key",
    "anthropic-key": "openai-key",
    "google-api-key": "google-api-key",
    "google-oauth-token": "google-api-key",
    "stripe-live-key": "stripe-key",
    "stripe-restricted-key": "stripe-key",
    "stripe-webhook-secret": "stripe-key",
    "url-password": "url-password",
    "password-assignment": "secret-assignment",
    "bearer-token": "bearer-authorization",
    "prompt-text": "prompt-text",
  };

  it.each(shaped.filter((c) => expected[c.format] !== undefined).map((c) => [c.format, c] as const))(
    "%s is found where it stands, and its secret part is replaced",
    (format, canary) => {
      const text = `before ${canary.text} after`;
      const spans = byId(expected[format]!).find(text, RAW);
      expect(spans.length).toBeGreaterThan(0);
      const replaced = redactJson({ note: text }, full, new Map()) as { note: string };
      expect(replaced.note).not.toContain(canary.value);
      if (format !== "prompt-text") expect(replaced.note).toMatch(/^before .*after$/);
    },
  );

  it("finds PEM private keys of every kind, JWTs, and tells the server's own credentials apart", async () => {
    for (const pem of pemCanaries()) expect(byId("pem-private-key").find(JSON.stringify({ key: pem.text }), RAW)).toHaveLength(1);
    expect(byId("pem-private-key").find("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (truncated", RAW)).toHaveLength(1);
    const { privateKey } = generateKeyPairSync("ed25519");
    const ours = await new SignJWT({ a: 1 }).setProtectedHeader({ alg: "EdDSA", kid: KEY_ID }).sign(privateKey);
    const theirs = await new SignJWT({ a: 1 }).setProtectedHeader({ alg: "EdDSA", kid: "someone-else" }).sign(privateKey);
    expect(issuedCredentialDetector([KEY_ID]).find(`${ours} ${theirs}`, RAW)).toHaveLength(1);
    const tally = new Map<string, number>();
    expect(redactJson([ours, theirs], full, tally)).toEqual(["[redacted:issued-credential]", "[redacted:jwt]"]);
    expect(Object.fromEntries(tally)).toEqual({ "issued-credential": 1, jwt: 1 });
  });

  it("finds nothing in benign text: identifiers, digests, times, placeholders, a bundle's own words", () => {
    const manifest = buildManifest({
      operation: "operations/01M87F74XA7ZQSVVEHZM5ERCSV",
      profile: "profiles/dev",
      exportTime: new Date(),
      serverVersion: "0.1.0",
      files: [{ name: "operations.json", data: Buffer.from("[]") }],
      allowlist: { redactedFields: 3 },
      detectors: full,
      replaced: new Map(full.map((d) => [d.id, 2])),
      finalScanDetectors: full,
    });
    const benign = [
      "operations/01M87F74XA7ZQSVVEHZM5ERCSV",
      "delegations/01M87F74RBEJBFNE6E3H2CSG9P AKIAFAKE",
      "d56058574111346453ef0819d23be18c04e6afec1a5b385b07e389308b97c106",
      "2026-11-24T19:06:13.802Z",
      "policyBundles/personal/versions/1",
      REDACTED,
      "[redacted:jwt] [redacted:url-password] password=[redacted] https://user:[redacted]@host",
      '"tokens": "160000", "tokensIncluded": false',
      "the authorization header is not a bearer credential",
      "registry.test/prints@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
      "agent_machine.diagnostics.export_redacted",
      JSON.stringify(manifest, null, 2),
    ];
    for (const text of benign) expect(findsIn(text), text.slice(0, 60)).toEqual([]);
  });
});

describe("known values", () => {
  it("finds a value in every encoding it can travel in, and only values long enough to tell from ordinary text", () => {
    const [secret] = envValueCanaries(1);
    const detector = knownValuesDetector("secret-env-value", "localSecrets", [secret!.value, "short", "1"]);
    for (const { encoding, text } of encodingsOf(secret!.value)) expect(detector.find(`x ${text} y`, RAW), encoding).toHaveLength(1);
    expect(detector.find("short 1 1 1", RAW)).toEqual([]);
  });

  it("finds each base64 line of a PEM on its own", () => {
    const [pem] = pemCanaries().filter((c) => c.format === "rsa-private-key");
    const detector = knownValuesDetector("local-secret", "localSecrets", [pem!.value]);
    const line = pem!.value.split("\n")[3]!;
    expect(detector.find(`…${line}…`, RAW)).toHaveLength(1);
  });

  it("searches for env values that can be told from ordinary identifiers only", () => {
    for (const value of ["hunter2hunter2", "credentialsIncluded", "team-2024-q4", "s3cr3t!"]) expect(distinctive(value), value).toBe(true);
    for (const value of ["production", "PRODUCTION", "read-only", "8080", "/run/user/1000/bus"]) expect(distinctive(value), value).toBe(false);
  });

  it("takes the server's secret-named environment variables", () => {
    expect(secretEnvValues({ PATH: "/usr/bin", GITHUB_TOKEN: "t", PGPASSWORD: "p", AWS_SECRET_ACCESS_KEY: "s", SIGNING_KEY: "k", LANG: "C" }).sort()).toEqual([
      "k",
      "p",
      "s",
      "t",
    ]);
  });

  it("takes every model provider key the gateway may be given (AMCTL_PROVIDER_…), whatever the rest of its name", () => {
    expect(secretEnvValues({ AMCTL_PROVIDER_OPENAI: "o", AMCTL_PROVIDER_CLAUDE_PROD: "c", AMCTL_SERVER: "http://127.0.0.1:7070" }).sort()).toEqual(["c", "o"]);
  });
});

describe("field detectors", () => {
  it("replace a high-entropy value of a secret-named field, and leave low-entropy ones and other fields alone", () => {
    const random = randomBytes(16).toString("base64url");
    expect(entropyBits(random)).toBeGreaterThan(3.5);
    expect(secretFieldEntropyDetector.find(random, { kind: "value", field: "clientSecret" })).toHaveLength(1);
    expect(secretFieldEntropyDetector.find(random, { kind: "value", field: "displayName" })).toEqual([]);
    expect(secretFieldEntropyDetector.find("aaaaaaaaaaaaaaaa", { kind: "value", field: "password" })).toEqual([]);
    expect(secretFieldEntropyDetector.find(random, RAW)).toEqual([]);
  });

  it("replace every prompt field's content whatever it says", () => {
    expect(promptFieldDetector.find("summarize the attached file", { kind: "value", field: "system_prompt" })).toHaveLength(1);
    expect(promptFieldDetector.find("hello", { kind: "value", field: "messages" })).toHaveLength(1);
    expect(promptFieldDetector.find(REDACTED, { kind: "value", field: "prompt" })).toEqual([]);
    expect(promptFieldDetector.find("hello", { kind: "value", field: "name" })).toEqual([]);
  });

  it("redactJson runs them with the name each value is found under, keys included", () => {
    const tally = new Map<string, number>();
    const out = redactJson({ auth: { apiToken: randomBytes(16).toString("hex"), prompt: "draft a reply" }, [`AKIA${"A".repeat(16)}`]: "x" }, full, tally);
    expect(out).toEqual({ auth: { apiToken: "[redacted:secret-field-entropy]", prompt: "[redacted:prompt-field]" }, "[redacted:aws-access-key]": "x" });
  });
});

describe("allowlists", () => {
  const operation = create(OperationSchema, {
    name: "operations/01ABC",
    requestId: "client-key-with-secret",
    type: OperationType.EXECUTION_START,
    profile: "profiles/dev",
    state: TaskState.FAILED,
    labels: { team: "platform secret words" },
    spec: { kind: { case: "executionStart", value: { argv: ["deploy", "--token", "x"], env: { TOKEN: "value" }, workingDirectory: "sub/dir" } } },
    stopCause: { reason: StopReason.EXIT_CODE, message: "process said: my password is hunter2" },
    policyDecisions: [
      { gate: PolicyGate.ARTIFACT_ACCESS, rule: "r1", bundleDigest: "ab".repeat(32), allowed: true, reason: "evaluation: input.x == 'secret'" },
    ],
  });

  it("keep listed fields, and redact every other field, label and env value, and free text", () => {
    const tally = { redactedFields: 0 };
    const out = project(OperationSchema, toJson(OperationSchema, operation), operationAllowlist, tally);
    expect(out).toEqual({
      name: "operations/01ABC",
      requestId: REDACTED,
      type: "OPERATION_TYPE_EXECUTION_START",
      profile: "profiles/dev",
      state: "TASK_STATE_FAILED",
      labels: { team: REDACTED },
      spec: { executionStart: { argv: REDACTED, env: { TOKEN: REDACTED }, workingDirectory: REDACTED } },
      stopCause: { reason: "STOP_REASON_EXIT_CODE", message: REDACTED },
      policyDecisions: [{ gate: "POLICY_GATE_ARTIFACT_ACCESS", rule: "r1", bundleDigest: "ab".repeat(32), allowed: true, reason: REDACTED }],
    });
    expect(tally.redactedFields).toBe(7);
  });

  it("redact a field the allowlist does not know (one added to the API later) and a stop reason that is not one of the enum's names", () => {
    const json = { ...(toJson(OperationSchema, operation) as Record<string, unknown>), futureField: "anything", stopCause: { reason: "Exit Code: hunter2" } };
    const out = project(OperationSchema, json as never, operationAllowlist, { redactedFields: 0 }) as Record<string, unknown>;
    expect(out.futureField).toBe(REDACTED);
    expect(out.stopCause).toEqual({ reason: REDACTED });
  });

  it("keep only the origin of an endpoint", () => {
    expect(urlOrigin("https://user:pw@models.example:8443/v1?api_key=k#x")).toBe("https://models.example:8443");
    expect(urlOrigin("not a url")).toBe(REDACTED);
  });

  it("keep listed settings and redact the store URL, paths and unknown settings", () => {
    const config = { ...defaultConfig, store: "postgres://amctl:hunter2@db/amctl", policyDir: "/home/alice/policies", futureSecret: "s" } as ServerConfig;
    const tally = { redactedFields: 0 };
    const out = projectConfig(config, tally);
    expect(out.settings).toMatchObject({
      host: "127.0.0.1",
      port: 7070,
      store: REDACTED,
      dataDir: REDACTED,
      policyDir: REDACTED,
      futureSecret: REDACTED,
      execution: { envAllowlist: defaultConfig.execution.envAllowlist },
    });
    expect((out.settings as Record<string, { tokens?: string }>).defaultBudget?.tokens).toBe("160000");
    expect(out.derived).toMatchObject({ storeKind: "postgres", policyDirConfigured: true });
    expect(JSON.stringify(out)).not.toContain("hunter2");
  });

  it("keep a log line's level, time, message and error type, and redact everything else", () => {
    const line = JSON.stringify({
      level: "error",
      time: "t",
      msg: "planted",
      err: { type: "Error", message: "pw=1", stack: "at x" },
      token: "[redacted]",
      operation: "operations/other",
      extra: { a: 1 },
    });
    expect(projectLogLine(line, new Set(), { redactedFields: 0 })).toEqual({
      level: "error",
      time: "t",
      msg: "planted",
      err: { type: "Error", message: REDACTED, stack: REDACTED },
      token: REDACTED,
      operation: REDACTED,
      extra: REDACTED,
    });
    const thrown = JSON.stringify({ level: "error", msg: "secret text", err: { type: "Error", message: "secret text" } });
    expect(projectLogLine(thrown, new Set(), { redactedFields: 0 }).msg).toBe(REDACTED);
    expect(projectLogLine("not json", new Set(), { redactedFields: 0 })).toEqual({ line: REDACTED });
  });
});

describe("exportBundle and the final scan", () => {
  const meta = (): BundleMeta => ({
    operation: "operations/01SEAM",
    profile: "profiles/dev",
    exportTime: new Date("2026-01-02T03:04:05Z"),
    serverVersion: "0.1.0",
    allowlist: { redactedFields: 0 },
  });
  const awsKey = `AKIA${"Q".repeat(16)}`;
  /** A key in a field the allowlist keeps verbatim (a tool's name). */
  const files = (): BundleFile[] => [{ name: "operations.json", content: [{ name: "operations/01X", spec: { toolGrantApply: { tool: awsKey } } }] }];

  it("replaces what the field pass finds, and the clean archive passes the final scan", async () => {
    const result = await exportBundle(files(), meta(), { detectors: full, finalScanDetectors: full });
    expect(result.kind).toBe("bundle");
    if (result.kind !== "bundle") return;
    const entries = await untar(await decompress(result.archive));
    expect(entries.map((e) => e.name)).toEqual(["amctl-diagnostics-01SEAM/manifest.json", "amctl-diagnostics-01SEAM/operations.json"]);
    expect(entries[1]!.data.toString()).toContain('"tool": "[redacted:aws-access-key]"');
    expect(result.manifest).toMatchObject({ credentialsIncluded: false, tokensIncluded: false, localSecretsIncluded: false, sensitivePromptsIncluded: false });
    expect(result.replaced.get("aws-access-key")).toBe(1);
  });

  it("fails closed when a value slips past the allowlist and the field detectors: the final scan finds it and no archive comes out", async () => {
    const narrow = full.filter((d) => d.id !== "aws-access-key");
    const result = await exportBundle(files(), meta(), { detectors: narrow, finalScanDetectors: full });
    expect(result).toEqual({
      kind: "leak",
      findings: expect.arrayContaining([expect.objectContaining({ detector: "aws-access-key", where: "amctl-diagnostics-01SEAM/operations.json" })]),
    });
    expect("archive" in result).toBe(false);
  });

  it("names the profile in the manifest as the files do, so a profile named like an env value does not fail the export", async () => {
    const detectors = defaultDetectors({ credentialKeyIds: [], localSecrets: [], envSecrets: ["team-2024-q4"] });
    const result = await exportBundle(
      [{ name: "server.json", content: { profile: "profiles/team-2024-q4" } }],
      { ...meta(), profile: "profiles/team-2024-q4" },
      { detectors, finalScanDetectors: detectors },
    );
    expect(result.kind).toBe("bundle");
    expect(result.kind === "bundle" && result.manifest.profile).toBe("profiles/[redacted:secret-env-value]");
  });

  it("finds what is in a tar header (an entry's name) and in the raw archive bytes", async () => {
    const named = await exportBundle([{ name: `notes-${awsKey}.json`, content: {} }], meta(), { detectors: full, finalScanDetectors: full });
    expect(named.kind === "leak" && named.findings.map((f) => f.where)).toContain("tar");
    // An archive stored without compression carries its files' bytes as they are.
    const stored = gzipSync(await tarOf([{ name: "a.txt", data: Buffer.from(`key ${awsKey}`) }], new Date()), { level: 0 });
    expect((await finalScan(stored, full)).map((f) => f.where).sort()).toEqual(["a.txt", "archive", "tar"]);
    expect(await finalScan(await packArchive([{ name: "a.txt", data: Buffer.from("nothing here") }], new Date()), full)).toEqual([]);
  });

  it("runs every detector over every file and counts them in the manifest", async () => {
    const shaped = shapedCanaries(1);
    const result = await exportBundle([{ name: "notes.json", content: { notes: shaped.map((c) => c.text) } }], meta(), {
      detectors: full,
      finalScanDetectors: full,
    });
    expect(result.kind).toBe("bundle");
    if (result.kind !== "bundle") return;
    const counted = (result.manifest.redaction as { detectors: { id: string; replaced: number }[] }).detectors;
    expect(counted.map((d) => d.id)).toEqual(full.map((d) => d.id));
    expect(counted.filter((d) => d.replaced > 0).map((d) => d.id)).toEqual(
      expect.arrayContaining(shapeDetectors.map((d) => d.id).filter((id) => id !== "pem-private-key" && id !== "jwt")),
    );
    const text = (await untar(await decompress(result.archive))).map((e) => e.data.toString()).join("\n");
    for (const canary of shaped.filter((c) => c.format !== "free-text" && c.format !== "hex-local-secret"))
      expect(text, canary.format).not.toContain(canary.value);
  });
});
