// Redacted diagnostics end to end, over real sockets and a real store. Canaries — more than 200
// unique secrets in more than 20 formats: credentials the server issued, the operator's private
// key, cloud and API keys, env values, passwords in URLs, prompts, free text — are planted in
// every place a bundle draws from (operations' specs and labels, events, stop causes, the
// configuration, the log), a bundle is exported and downloaded, and no canary may be found in
// it in any encoding. Benign data must still be there. A value that passes the allowlist and
// the field detectors but not the final scan fails the export closed, with no file left. The
// download streams the recorded bytes in 64 KiB chunks, to callers who may see the profile only.
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { DiagnosticsService } from "../../src/gen/agentmachine/v1/diagnostics_service_pb.js";
import { StopReason, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { decompress, untar } from "../../src/diagnostics/archive.js";
import { bundlePath, diagnosticsDir } from "../../src/diagnostics/bundle-file.js";
import { DiagnosticsExecutor } from "../../src/diagnostics/diagnostics-executor.js";
import { defaultDetectors } from "../../src/diagnostics/detectors.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { createLogger, recentErrors, type Logger } from "../../src/api/logger.js";
import { startServer, type RunningServer } from "../../src/server/server.js";
import { mintRoot, operatorOf, operatorPrivateKeyFile } from "../helpers/auth.js";
import { envValueCanaries, foreignJwtCanaries, leaks, pemCanaries, shapedCanaries, type Canary } from "../helpers/canaries.js";
import { amctl } from "../helpers/cli.js";
import { operationsClient, requestId, run, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { policyClient } from "../helpers/policy.js";
import { repoRoot, TEST_POLICIES, tempDir } from "../helpers/server.js";
import { registerToken } from "../helpers/tokens.js";
import { bearer } from "../helpers/auth.js";

const FAKE_RUNTIME = join(repoRoot, "test/fixtures/fake-container-runtime.mjs");
const IMAGE = `registry.test/prints@sha256:${"c".repeat(64)}`;

/** A process that reports each argument as a progress message (and its own credential), keeps the credential in its workspace's token.txt, and fails. */
const REPORTER = `
const fs = require("node:fs");
fs.writeFileSync(process.env.HOME + "/token.txt", process.env.AMCTL_TOKEN || "");
const lines = ["credential " + process.env.AMCTL_TOKEN, ...process.argv.slice(1)].map((message) => JSON.stringify({ message: message.slice(0, 1000) }));
(async () => {
  for (const line of lines) {
    fs.writeSync(3, line + "\\n");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  process.exit(3);
})();
`;

let server: RunningServer;
let url: string;
let dataDir: string;
let log: Logger;
let token: string;
let ops: OperationsClient;
let diagnostics: Client<typeof DiagnosticsService>;
const canaries: Canary[] = [];
const MAIN = "profiles/canary-lab";
const MODELS = "profiles/canary-models";
/** Operations of MAIN this test made, by name. */
const mainOperations = new Set<string>();
/** What MAIN's and MODELS' exports produced. */
const bundles = new Map<string, { operation: Operation; archive: Buffer; files: Map<string, string> }>();

const pick = (format: string, index = 0): Canary => canaries.filter((c) => c.format === format)[index] ?? expect.fail(`no ${format} canary ${index}`);

async function download(name: string, client = diagnostics): Promise<{ chunks: Uint8Array[]; archive: Buffer }> {
  const chunks: Uint8Array[] = [];
  for await (const { chunk } of client.downloadDiagnostics({ operation: name })) chunks.push(chunk);
  return { chunks, archive: Buffer.concat(chunks) };
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  return error ?? expect.fail("expected a refusal, but the call succeeded");
}

async function submitted(request: Parameters<OperationsClient["submitOperation"]>[0]): Promise<string> {
  const { operation } = await ops.submitOperation(request);
  if (operation!.profile === MAIN) mainOperations.add(operation!.name);
  return operation!.name;
}

async function exportOf(profile: string, labels: Record<string, string> = {}): Promise<Operation> {
  const name = await submitted({ requestId: requestId("diag"), profile, labels, spec: { kind: { case: "diagnosticsExport", value: {} } } });
  return (await waitForEnd(ops, name, 60_000)).operation;
}

/** The archive as text four ways: its raw bytes, the tar stream, and each file. */
async function haystacksOf(archive: Buffer): Promise<Map<string, string>> {
  const tarBytes = await decompress(archive);
  const haystacks = new Map([
    ["archive bytes", archive.toString("latin1")],
    ["tar stream", tarBytes.toString("latin1")],
  ]);
  for (const entry of await untar(tarBytes)) haystacks.set(entry.name.replace(/^[^/]+\//, ""), entry.data.toString("utf8"));
  return haystacks;
}

/** `items` dealt round-robin into `count` hands, so each hand mixes the formats. */
function dealt<T>(items: readonly T[], count: number): T[][] {
  return Array.from({ length: count }, (_, hand) => items.filter((_, i) => i % count === hand));
}

beforeAll(async () => {
  canaries.push(...shapedCanaries(10), ...envValueCanaries(10), ...pemCanaries(), ...(await foreignJwtCanaries(5)));
  const free = (i: number) => pick("free-text", i);

  // The configuration: paths that name canaries, and settings the server does not know.
  const policyDir = join(tempDir(), `policies-${free(0).value}-${pick("aws-access-key-id", 9).value}`);
  cpSync(TEST_POLICIES, policyDir, { recursive: true });
  const anchorDir = join(tempDir(), `anchors-${free(1).value}`);
  mkdirSync(anchorDir);
  writeFileSync(join(anchorDir, "extra.pub"), generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }) as string);
  const runtimeDir = join(tempDir(), `runtime-${free(2).value}`);
  mkdirSync(runtimeDir);
  copyFileSync(FAKE_RUNTIME, join(runtimeDir, "podman.mjs"));
  chmodSync(join(runtimeDir, "podman.mjs"), 0o755);
  dataDir = tempDir();
  const operator = await operatorOf(dataDir);
  const config = {
    ...defaultConfig,
    port: 0,
    dataDir,
    shutdownGraceMs: 2000,
    policyDir,
    trustAnchors: [join(anchorDir, "extra.pub")],
    containerRuntime: join(runtimeDir, "podman.mjs"),
    vaultPassword: pick("url-password", 9).text,
    upstreamToken: pick("openai-project-key", 9).text,
  } as ServerConfig;
  const sink = new Writable({ write: (_chunk, _encoding, callback) => callback() });
  log = createLogger("debug", sink);
  server = await startServer(config, log);
  url = server.url;
  token = await mintRoot(operator);
  registerToken(url, token);
  ops = operationsClient(url);
  diagnostics = createClient(DiagnosticsService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));

  // Credentials: the operator key, roots it signed, and children the server issued.
  canaries.push({
    format: "operator-private-key",
    value: readFileSync(operatorPrivateKeyFile(dataDir), "utf8"),
    text: readFileSync(operatorPrivateKeyFile(dataDir), "utf8"),
  });
  canaries.push({ format: "root-credential", value: token, text: token });
  for (let i = 0; i < 4; i += 1) {
    const root = await mintRoot(operator, { subject: `root-${i}` });
    canaries.push({ format: "root-credential", value: root, text: root });
  }
  const delegations = createClient(DelegationService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));
  for (let i = 0; i < 10; i += 1) {
    const { token: child } = await delegations.issueDelegation({
      subject: `agent-${i}`,
      scope: { operationTypes: [OperationType.TOOL_GRANT_APPLY], profiles: [MAIN] },
    });
    canaries.push({ format: "issued-credential", value: child, text: child });
  }

  // Profiles, one with a display name of canaries.
  await run(ops, {
    requestId: requestId("profile"),
    spec: {
      kind: {
        case: "profileCreate",
        value: { profileId: "canary-lab", profileType: ProfileType.PERSONAL, displayName: `${free(3).text} ${pick("aws-access-key-id", 8).text}` },
      },
    },
  });
  await run(ops, {
    requestId: requestId("profile"),
    spec: { kind: { case: "profileCreate", value: { profileId: "canary-models", profileType: ProfileType.LOCAL_MODEL_PROVIDER, displayName: free(4).text } } },
  });
  for (const { operation } of (await ops.listOperations({ filter: { profile: MAIN } })).operations.map((operation) => ({ operation })))
    mainOperations.add(operation.name);

  // Executions that carry every canary in argv, labels and progress events; half of them also
  // as env values (which a detector then knows), half not (where only the allowlist and the
  // shape detectors stand between them and a bundle).
  const planted = [...canaries];
  const started = dealt(planted, 12).map((chunk, n) =>
    submitted({
      requestId: requestId("exec"),
      profile: MAIN,
      labels: Object.fromEntries(
        chunk
          .filter((c) => c.text.length <= 256)
          .slice(0, 32)
          .map((c, i) => [`c${i}`, c.text]),
      ),
      spec: {
        kind: {
          case: "executionStart",
          value: {
            argv: [process.execPath, "-e", REPORTER, ...chunk.map((c) => c.text)],
            env: n % 2 === 0 ? Object.fromEntries(chunk.map((c, i) => [`CANARY_${i}`, c.text])) : { PLAIN: "1" },
            workingDirectory: `work/${free(n % 10).value}`,
          },
        },
      },
    }),
  );
  const executions = await Promise.all(started);
  // Programs that cannot start: the stop cause names them.
  for (const program of [pick("aws-access-key-id", 1), pick("github-classic-token", 1), pick("stripe-live-key", 1), pick("openai-project-key", 1)]) {
    executions.push(
      await submitted({
        requestId: requestId("exec"),
        profile: MAIN,
        spec: { kind: { case: "executionStart", value: { argv: [program.text, free(5).text] } } },
      }),
    );
  }
  // A cancel whose reason is canaries.
  const sleeper = await submitted({
    requestId: requestId("exec"),
    profile: MAIN,
    spec: { kind: { case: "executionStart", value: { argv: [process.execPath, "-e", "setTimeout(() => {}, 60000)"] } } },
  });
  for await (const { event } of ops.watchOperation({ name: sleeper })) if (event?.state === TaskState.RUNNING) break;
  const { cancelOperation } = await ops.cancelOperation({
    name: sleeper,
    reason: `${free(6).text} ${pick("url-password", 1).text} ${pick("prompt-text", 1).text}`,
  });
  mainOperations.add(cancelOperation!.name);
  executions.push(sleeper);
  // Container runs with canaries in argv, and the same half as above in env.
  for (const [n, chunk] of dealt(planted, 2).entries()) {
    const env = n === 0 ? Object.fromEntries(chunk.map((c, i) => [`CANARY_${i}`, c.text])) : {};
    executions.push(
      await submitted({
        requestId: requestId("container"),
        profile: MAIN,
        spec: { kind: { case: "containerRun", value: { image: IMAGE, argv: chunk.map((c) => c.text), env } } },
      }),
    );
  }
  // Tool grants: the tool's name is kept (it is a name the client chose), so only shapes the detectors know go there.
  const grants: string[] = [];
  for (const tool of [
    "git",
    pick("aws-access-key-id", 2).text,
    pick("github-classic-token", 2).text,
    pick("slack-bot-token", 2).text,
    pick("google-api-key", 2).text,
    pick("stripe-live-key", 2).text,
  ]) {
    grants.push(await submitted({ requestId: requestId("grant"), profile: MAIN, spec: { kind: { case: "toolGrantApply", value: { tool } } } }));
  }
  for (const name of grants) await waitForEnd(ops, name);
  await run(ops, {
    requestId: requestId("revoke"),
    profile: MAIN,
    spec: { kind: { case: "toolGrantRevoke", value: { grant: grants[1]!, reason: `${free(7).text} ${pick("bearer-token", 1).text}` } } },
  }).then(({ operation }) => mainOperations.add(operation.name));
  // Model provider bindings, in the provider profile: an endpoint with a password and a key in its query.
  await run(ops, {
    requestId: requestId("bind"),
    profile: MODELS,
    spec: {
      kind: {
        case: "modelProviderBind",
        value: {
          provider: "ollama",
          endpoint: `https://svc:${pick("url-password", 2).value}@models.internal:8443/v1/chat?api_key=${pick("openai-project-key", 2).text}&note=${free(8).value}`,
        },
      },
    },
  });
  await run(ops, {
    requestId: requestId("bind"),
    profile: MODELS,
    spec: { kind: { case: "modelProviderBind", value: { provider: pick("google-api-key", 3).text, endpoint: pick("url-password", 3).text } } },
  });
  for (const name of executions) await waitForEnd(ops, name, 60_000);

  // Each execution's own credential, which it echoed into a progress event.
  for (const name of executions) {
    const file = join(dataDir, "workspaces", name.replace("operations/", ""), "token.txt");
    if (existsSync(file) && readFileSync(file, "utf8") !== "") canaries.push({ format: "execution-credential", value: readFileSync(file, "utf8"), text: "" });
  }

  // The log: canaries in fields, and shapes in messages (log messages are constants of the code; these stand for a careless call).
  log.error(
    {
      err: new Error(`connect ${pick("url-password", 4).text} failed`),
      token: pick("foreign-jwt").text,
      apiKey: pick("openai-project-key", 4).text,
      detail: free(9).text,
      operation: "operations/01NOTOURS0000000000000000",
    },
    "planted upstream failure",
  );
  log.warn(
    {
      headers: { authorization: `Bearer ${pick("bearer-token", 4).value}` },
      cookie: pick("hex-local-secret", 4).text,
      env: { KEY: pick("secret-env-value", 4).text },
    },
    "planted warning",
  );
  log.error(new Error(`password=${pick("password-assignment", 4).value} ${free(9).text}`));
  log.error(`rejected the credential ${canaries.find((c) => c.format === "issued-credential")!.text}`);
  log.error(`upstream answered for ${pick("aws-access-key-id", 4).text} and ${pick("github-fine-grained-token", 4).text}`);
  log.warn({ operation: executions[0] }, "planted own operation");
  expect(recentErrors(log).length).toBeGreaterThanOrEqual(6);

  // The exports, with canaries in their own labels too.
  for (const profile of [MAIN, MODELS]) {
    const operation = await exportOf(profile, { note: free(0).text, prompt: pick("prompt-text", 2).text, key: pick("stripe-webhook-secret", 2).text });
    expect(operation.state, JSON.stringify(operation.stopCause)).toBe(TaskState.COMPLETED);
    const { archive } = await download(operation.name);
    bundles.set(profile, { operation, archive, files: await haystacksOf(archive) });
  }
}, 180_000);
afterAll(() => server?.close());

describe("canaries", () => {
  it("plants at least 200 unique values in at least 20 formats", () => {
    expect(new Set(canaries.map((c) => c.value)).size).toBeGreaterThanOrEqual(200);
    expect(new Set(canaries.map((c) => c.format)).size).toBeGreaterThanOrEqual(20);
    expect(canaries.filter((c) => c.format === "execution-credential").length).toBeGreaterThanOrEqual(5);
  });

  it.each([MAIN, MODELS])("none of them is in the bundle of %s, in any encoding, raw or decompressed", (profile) => {
    const { files } = bundles.get(profile)!;
    expect(files.size).toBe(11); // the archive, the tar stream and nine files
    expect(leaks(canaries, files)).toEqual([]);
  });

  it("the detectors replaced what slipped into allowlisted fields (tool and provider names, log messages), and the manifest counts it", () => {
    const replacedIn = (profile: string) => {
      const manifest = JSON.parse(bundles.get(profile)!.files.get("manifest.json")!) as {
        redaction: { allowlist: { fieldsRedacted: number }; detectors: { id: string; replaced: number }[] };
      };
      expect(manifest.redaction.allowlist.fieldsRedacted).toBeGreaterThan(10);
      return Object.fromEntries(manifest.redaction.detectors.map((d) => [d.id, d.replaced]));
    };
    // In MAIN the canaries are also env values of container runs there, so the first detector
    // to see the tool names is the one of known env values.
    expect(replacedIn(MAIN)["secret-env-value"]).toBeGreaterThanOrEqual(5);
    expect(bundles.get(MAIN)!.files.get("operations.json")).toContain('"tool": "[redacted:secret-env-value]"');
    // MODELS has no execution: the shapes are what the detectors know them by.
    const models = replacedIn(MODELS);
    for (const id of ["aws-access-key", "github-token", "google-api-key", "issued-credential"]) expect(models[id], id).toBeGreaterThan(0);
    expect(bundles.get(MODELS)!.files.get("operations.json")).toContain('"provider": "[redacted:google-api-key]"');
  });
});

describe("benign data", () => {
  const json = <T>(profile: string, file: string): T => JSON.parse(bundles.get(profile)!.files.get(file)!) as T;

  it("keeps operation names, types, states, profiles, label and env keys, and tool names", () => {
    const operations = json<
      {
        name: string;
        type: string;
        state: string;
        profile: string;
        labels?: Record<string, string>;
        spec: Record<string, { env?: Record<string, string>; tool?: string }>;
      }[]
    >(MAIN, "operations.json");
    expect(new Set(operations.map((o) => o.name))).toEqual(new Set([...mainOperations, bundles.get(MAIN)!.operation.name]));
    expect(new Set(operations.map((o) => o.profile))).toEqual(new Set([MAIN]));
    expect(new Set(operations.map((o) => o.type))).toEqual(
      new Set([
        "OPERATION_TYPE_PROFILE_CREATE",
        "OPERATION_TYPE_EXECUTION_START",
        "OPERATION_TYPE_EXECUTION_CANCEL",
        "OPERATION_TYPE_CONTAINER_RUN",
        "OPERATION_TYPE_TOOL_GRANT_APPLY",
        "OPERATION_TYPE_TOOL_GRANT_REVOKE",
        "OPERATION_TYPE_DIAGNOSTICS_EXPORT_REDACTED",
      ]),
    );
    expect(new Set(operations.map((o) => o.state))).toEqual(
      new Set(["TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELLED", "TASK_STATE_RUNNING"]),
    );
    expect(operations.find((o) => o.spec.toolGrantApply?.tool === "git")).toBeDefined();
    expect(Object.keys(operations.find((o) => o.spec.executionStart?.env)!.spec.executionStart!.env!)).toContain("CANARY_0");
    expect(Object.keys(operations.find((o) => o.labels?.c0 !== undefined)!.labels!)).toContain("c0");
  });

  it("keeps policy bundle names, versions and digests, and the digests in the decisions", async () => {
    const bundlesInForce = (await policyClient(url, token).listPolicyBundles({})).bundles;
    const listed = json<{ name: string; version: string; digest: string }[]>(MAIN, "policy-bundles.json");
    expect(listed.map((b) => [b.name, b.version, b.digest])).toEqual(bundlesInForce.map((b) => [b.name, String(b.version), b.digest]));
    const personal = bundlesInForce.find((b) => b.profileType === ProfileType.PERSONAL)!;
    expect(bundles.get(MAIN)!.files.get("operations.json")).toContain(`"bundleDigest": "${personal.digest}"`);
  });

  it("keeps events, store statistics, health, the version, allowlisted settings and recent error lines", () => {
    const events = json<{ operation: string; type: string }[]>(MAIN, "events.json");
    expect(new Set(events.map((e) => e.type))).toEqual(
      new Set(["EVENT_TYPE_START", "EVENT_TYPE_PROGRESS", "EVENT_TYPE_FAILURE", "EVENT_TYPE_CANCEL", "EVENT_TYPE_COMPLETE"]),
    );
    expect(events.every((e) => mainOperations.has(e.operation) || e.operation === bundles.get(MAIN)!.operation.name)).toBe(true);
    const stats = json<{ operations: { total: number; byTypeAndState: Record<string, Record<string, number>> } }>(MAIN, "store-stats.json");
    expect(stats.operations.total).toBe(mainOperations.size);
    expect(stats.operations.byTypeAndState["agent_machine.tool_grant.apply"]).toEqual({ completed: 6 });
    expect(json<{ services: Record<string, string> }>(MAIN, "health.json").services["agentmachine.v1.DiagnosticsService"]).toBe("SERVING");
    const version = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
    expect(json<{ version: string; profile: string }>(MAIN, "server.json")).toMatchObject({ version, profile: MAIN });
    const config = json<{ settings: Record<string, unknown>; derived: Record<string, unknown> }>(MAIN, "config.json");
    expect(config.settings).toMatchObject({
      host: "127.0.0.1",
      maxConcurrentExecutions: 4,
      policyDir: "[redacted]",
      vaultPassword: "[redacted]",
      containerRuntime: "[redacted]",
    });
    expect(config.derived).toEqual({ storeKind: "sqlite", containerRuntimeConfigured: true, trustAnchorFiles: 1, policyDirConfigured: true });
    const errors = json<{ msg?: string; level: string; operation?: string; err?: Record<string, string> }[]>(MAIN, "recent-errors.json");
    expect(errors.find((e) => e.msg === "planted upstream failure")).toMatchObject({
      level: "error",
      err: { type: "Error", message: "[redacted]" },
      operation: "[redacted]",
    });
    expect(errors.find((e) => e.msg === "planted own operation")?.operation).toMatch(/^operations\//);
  });

  it("keeps a provider's name and its endpoint's origin", () => {
    const text = bundles.get(MODELS)!.files.get("operations.json")!;
    expect(text).toContain('"provider": "ollama"');
    expect(text).toContain('"endpoint": "https://models.internal:8443"');
  });

  it("has a manifest naming each file with its digest, the detectors, and the four flags false", () => {
    const { files, operation } = bundles.get(MAIN)!;
    const manifest = JSON.parse(files.get("manifest.json")!) as Record<string, unknown> & { files: { name: string; sha256: string; sizeBytes: number }[] };
    expect(manifest).toMatchObject({
      operation: operation.name,
      profile: MAIN,
      credentialsIncluded: false,
      tokensIncluded: false,
      localSecretsIncluded: false,
      sensitivePromptsIncluded: false,
    });
    expect(manifest.files.map((f) => f.name).sort()).toEqual([...files.keys()].filter((k) => k.endsWith(".json") && k !== "manifest.json").sort());
    for (const file of manifest.files) {
      expect(createHash("sha256").update(files.get(file.name)!, "utf8").digest("hex"), file.name).toBe(file.sha256);
      expect(Buffer.byteLength(files.get(file.name)!), file.name).toBe(file.sizeBytes);
    }
    expect(operation.artifact?.kind).toMatchObject({
      case: "agentMachineDiagnosticBundle",
      value: {
        operationType: OperationType.DIAGNOSTICS_EXPORT_REDACTED,
        credentialsIncluded: false,
        tokensIncluded: false,
        localSecretsIncluded: false,
        sensitivePromptsIncluded: false,
      },
    });
  });
});

describe("failing closed", () => {
  it("a secret that the field pass cannot see but the final scan does fails the export with redaction_failed and no file", async () => {
    // An env value is secret whatever it says; this one is also a word only the manifest uses,
    // which the detectors never pass over before packing: the final scan is what finds it.
    await run(ops, {
      requestId: requestId("profile"),
      spec: { kind: { case: "profileCreate", value: { profileId: "leaky", profileType: ProfileType.PERSONAL } } },
    });
    await run(ops, {
      requestId: requestId("exec"),
      profile: "profiles/leaky",
      spec: { kind: { case: "executionStart", value: { argv: [process.execPath, "-e", "0"], env: { FLAG: "credentialsIncluded" } } } },
    });
    const operation = await exportOf("profiles/leaky");
    expect(operation.state).toBe(TaskState.FAILED);
    expect(operation.stopCause?.reason).toBe(StopReason.REDACTION_FAILED);
    expect(operation.stopCause?.message).toContain("secret-env-value");
    expect(operation.stopCause?.message).toContain("manifest.json");
    expect(operation.artifact).toBeUndefined();
    expect(existsSync(bundlePath(dataDir, operation.name))).toBe(false);
    const id = operation.name.replace("operations/", "");
    expect(readdirSync(diagnosticsDir(dataDir)).filter((file) => file.includes(id))).toEqual([]);
    expect((await refusal(download(operation.name))).code).toBe(Code.FailedPrecondition);
  });

  it("a key in an allowlisted field that the field detectors miss is caught by the final scan, and any file of the operation is removed", async () => {
    // A tool named by an AWS key, in a profile where nothing else knows the key.
    await run(ops, {
      requestId: requestId("profile"),
      spec: { kind: { case: "profileCreate", value: { profileId: "seam", profileType: ProfileType.PERSONAL } } },
    });
    await run(ops, {
      requestId: requestId("grant"),
      profile: "profiles/seam",
      spec: { kind: { case: "toolGrantApply", value: { tool: shapedCanaries(1)[0]!.text } } },
    });
    const operation = await exportOf("profiles/seam");
    expect(existsSync(bundlePath(dataDir, operation.name))).toBe(true);
    const executor = new DiagnosticsExecutor({
      store: server.store,
      dataDir,
      config: defaultConfig,
      health: server.health,
      recentErrors: () => recentErrors(log),
      credentialKeyIds: () => [],
      localSecrets: async () => [],
      // The seam: the field pass lacks the AWS detector, the final scan has every detector.
      pipeline: (secrets) => ({ detectors: defaultDetectors(secrets).filter((d) => d.id !== "aws-access-key"), finalScanDetectors: defaultDetectors(secrets) }),
    });
    const outcome = await executor.run({
      operation,
      attempt: 2,
      workspace: tempDir(),
      signal: new AbortController().signal,
      env: {},
      progress: () => {},
      spawned: () => {},
    });
    expect(outcome).toMatchObject({ kind: "failed", retryable: false, cause: { reason: StopReason.REDACTION_FAILED } });
    expect(outcome.kind === "failed" && outcome.cause.message).toMatch(/aws-access-key ×\d+ in amctl-diagnostics-[^/]+\/operations\.json/);
    expect(existsSync(bundlePath(dataDir, operation.name))).toBe(false);
  });
});

describe("DownloadDiagnostics", () => {
  it("streams exactly the bytes whose digest and size the artifact records", async () => {
    const { operation } = bundles.get(MAIN)!;
    const { chunks, archive } = await download(operation.name);
    const artifact = operation.artifact!.kind.value as { sha256: string; sizeBytes: bigint };
    expect(createHash("sha256").update(archive).digest("hex")).toBe(artifact.sha256);
    expect(BigInt(archive.length)).toBe(artifact.sizeBytes);
    expect(chunks.every((chunk) => chunk.length > 0 && chunk.length <= 65536)).toBe(true);
    expect(readFileSync(bundlePath(dataDir, operation.name)).equals(archive)).toBe(true);
  });

  it("sends a large bundle in 64 KiB chunks, and refuses with DataLoss once the file no longer matches", async () => {
    const operation = await exportOf(MODELS);
    // A larger archive in its place, recorded as the artifact (the chunking does not depend on what the bytes are).
    const big = randomBytes(200 * 1024 + 7);
    writeFileSync(bundlePath(dataDir, operation.name), big);
    await server.store.modifyOperation(operation.name, (current) => {
      const value = current.artifact!.kind.value as { sha256: string; sizeBytes: bigint };
      value.sha256 = createHash("sha256").update(big).digest("hex");
      value.sizeBytes = BigInt(big.length);
      return { operation: current };
    });
    const { chunks, archive } = await download(operation.name);
    expect(chunks.map((c) => c.length)).toEqual([65536, 65536, 65536, 8199]);
    expect(archive.equals(big)).toBe(true);
    big[1000] = big[1000]! ^ 0xff;
    writeFileSync(bundlePath(dataDir, operation.name), big);
    expect((await refusal(download(operation.name))).code).toBe(Code.DataLoss);
  });

  it("answers a caller who may not see the profile NotFound, as if the bundle did not exist, and says NotFound or FailedPrecondition for what is not a bundle", async () => {
    const delegations = createClient(DelegationService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));
    const { token: outsider } = await delegations.issueDelegation({
      subject: "outsider",
      scope: { operationTypes: [OperationType.DIAGNOSTICS_EXPORT_REDACTED], profiles: [MODELS] },
    });
    const theirs = createClient(DiagnosticsService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(outsider)] }));
    const denied = await refusal(download(bundles.get(MAIN)!.operation.name, theirs));
    expect(denied.code).toBe(Code.NotFound);
    expect((await download(bundles.get(MODELS)!.operation.name, theirs)).archive.equals(bundles.get(MODELS)!.archive)).toBe(true);
    expect((await refusal(download("operations/01NOSUCHOPERATION00000000000"))).code).toBe(Code.NotFound);
    expect((await refusal(download([...mainOperations][0]!))).code).toBe(Code.FailedPrecondition);
    expect((await refusal(download("not-an-operation"))).code).toBe(Code.InvalidArgument);
  });
});

describe("amctl diagnostics export", () => {
  it("submits, waits, downloads and checks the bundle", async () => {
    const file = join(tempDir(), "bundle.tar.gz");
    const result = await amctl(["diagnostics", "export", "--profile", "canary-models", "--recent", "5", "-o", file, "--server", url, "--json"], {
      AMCTL_TOKEN: token,
    });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const printed = JSON.parse(result.stdout) as { operation: string; file: string; sizeBytes: number; sha256: string };
    const bytes = readFileSync(file);
    expect(printed).toEqual({ operation: printed.operation, file, sizeBytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") });
    const { operation } = await ops.getOperation({ name: printed.operation });
    expect((operation!.artifact!.kind.value as { sha256: string }).sha256).toBe(printed.sha256);
    expect(JSON.parse((await haystacksOf(bytes)).get("store-stats.json")!)).toMatchObject({ recentOperationsIncluded: 5 });
  });

  it("exits 1 naming redaction_failed when the export fails closed", async () => {
    const file = join(tempDir(), "bundle.tar.gz");
    const result = await amctl(["diagnostics", "export", "--profile", "leaky", "-o", file, "--server", url], { AMCTL_TOKEN: token });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("redaction_failed");
    expect(existsSync(file)).toBe(false);
  });
});
