// Governed mounts end to end (issue 19), over real sockets on a sandboxed server: a host path
// is mounted only under the caller's mount_prefixes, judged after symbolic links and `..` are
// resolved, never from the data dir (not even for a root that may mount "*"), read-only unless
// it is the operation's own workspace, and decided by the artifactAccess gate, whose decision
// is on the operation and in the audit log. Each rule is attacked by a caller or an execution.
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { PolicyDecisionSchema, StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationService, SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, PolicyGate, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig } from "../../src/config/config.js";
import { allAuditRecords } from "../helpers/audit-records.js";
import { amctl } from "../helpers/cli.js";
import { bearer, fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { createProfile, execution, requestId, waitForEnd } from "../helpers/operations.js";
import { bundleSource, denialOf, policyClient } from "../helpers/policy.js";
import { repoRoot, startTestServer, TEST_POLICIES, tempDir, type TestServer } from "../helpers/server.js";

const RUNTIME = join(repoRoot, "test/fixtures/fake-container-runtime.mjs");
const runtimeDir = tempDir("amctl-fake-runtime-");

let server: TestServer;
/** A root that may mount under the project only. */
let scoped: Client<typeof OperationService>;
/** A root that may mount anything ("*"). */
let everything: Client<typeof OperationService>;
let scopedToken: string;
let profile: string;
/** The user's project (every file writable by anyone, so only a read-only mount keeps it unchanged). */
let project: string;
/** A directory outside the project. */
let secret: string;

function operations(token: string, url = server.url): Client<typeof OperationService> {
  return createClient(OperationService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  return error ?? expect.fail("expected a refusal, but the call succeeded");
}

function sh(script: string, mounts: { hostPath: string; path: string; readWrite?: boolean }[], options: Parameters<typeof execution>[2] = {}) {
  return execution(profile, ["sh", "-c", script], { ...options, mounts });
}

async function runToEnd(client: Client<typeof OperationService>, request: ReturnType<typeof execution>) {
  const { operation } = await client.submitOperation(request);
  return (await waitForEnd(client, operation!.name, 60_000)).operation;
}

const workspaceOf = (name: string): string => join(server.dataDir, "workspaces", name.replace("operations/", ""));

function expectAxis(error: ConnectError, axis: string): void {
  expect(error.code).toBe(Code.PermissionDenied);
  expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "OUT_OF_SCOPE", metadata: { axis } });
}

function expectFieldViolation(error: ConnectError, field: string): void {
  expect(error.code).toBe(Code.InvalidArgument);
  expect(error.message).toContain(field);
  expect(error.findDetails(ViolationsSchema)).toHaveLength(1);
}

beforeAll(async () => {
  project = mkdtempSync(join(tmpdir(), "amctl-project-"));
  writeFileSync(join(project, "readme.txt"), "original\n");
  mkdirSync(join(project, "private"));
  writeFileSync(join(project, "private", "notes.txt"), "private\n");
  for (const path of [project, join(project, "private")]) chmodSync(path, 0o777);
  chmodSync(join(project, "readme.txt"), 0o666);
  project = realpathSync(project);
  // Readable by the sandbox's user: only the mount rules keep an execution out of it.
  secret = realpathSync(mkdtempSync(join(tmpdir(), "amctl-secret-")));
  chmodSync(secret, 0o777);
  symlinkSync(secret, join(project, "escape"));

  // The test bundles, with the personal profile's artifactAccess gate refusing the project's private directory.
  const policyDir = tempDir("amctl-mount-policies-");
  for (const file of readdirSync(TEST_POLICIES)) copyFileSync(join(TEST_POLICIES, file), join(policyDir, file));
  const personal = readFileSync(join(TEST_POLICIES, "personal.yaml"), "utf8");
  const rules = parse(personal) as { rules: { id: string; gate: string; effect: string; when: string }[] };
  const deny = {
    id: "test.no-private-mounts",
    gate: "artifactAccess",
    effect: "deny",
    when: `input.mount_host_path.startsWith("${project}/private")`,
    description: "the project's private files are not mounted",
  };
  writeFileSync(join(policyDir, "personal.yaml"), bundleSource("personal", [...rules.rules, deny]));

  process.env.AMCTL_FAKE_RUNTIME_DIR = runtimeDir;
  server = await startTestServer({
    policyDir,
    containerRuntime: RUNTIME,
    execution: { ...defaultConfig.execution, envAllowlist: ["PATH", "AMCTL_FAKE_RUNTIME_DIR"], killGraceMs: 500 },
  });
  symlinkSync(server.dataDir, join(project, "data"));
  const operator = await operatorOf(server.dataDir);
  scopedToken = await mintRoot(operator, { scope: { ...fullScope, mountPrefixes: [project] } });
  scoped = operations(scopedToken);
  everything = operations(await mintRoot(operator, { scope: { ...fullScope, mountPrefixes: ["*"] } }));
  profile = await createProfile(operations(server.token), "mounts");
});
afterAll(async () => {
  await server?.close();
  delete process.env.AMCTL_FAKE_RUNTIME_DIR;
});

describe("the caller's mount_prefixes", () => {
  it("refuse a host path outside them, naming the axis", async () => {
    expectAxis(await refusal(scoped.submitOperation(sh("true", [{ hostPath: secret, path: "/secret" }]))), "mount_prefixes");
  });

  it("are judged on the resolved path: a symbolic link or a `..` out of the project is refused", async () => {
    writeFileSync(join(secret, "exists"), "");
    // `escape/..` is the parent of the link's target to the kernel, not the project.
    for (const hostPath of [join(project, "escape"), `${project}/../${basename(secret)}`, `${project}/escape/..`, join(project, "escape", "exists")]) {
      expectAxis(await refusal(scoped.submitOperation(sh("true", [{ hostPath, path: "/p" }]))), "mount_prefixes");
    }
  });

  it("tell nothing of what lies behind a link out of them: a missing file there is refused alike", async () => {
    expectAxis(await refusal(scoped.submitOperation(sh("true", [{ hostPath: join(project, "escape", "missing", "deeper"), path: "/p" }]))), "mount_prefixes");
    expectFieldViolation(
      await refusal(scoped.submitOperation(sh("true", [{ hostPath: join(project, "missing"), path: "/p" }]))),
      "spec.execution_start.mounts[0].host_path",
    );
  });

  it("bound a child delegation: IssueDelegation refuses prefixes outside its parent's, naming the axis", async () => {
    const delegations = createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(scopedToken)] }));
    const child = { operationTypes: [OperationType.EXECUTION_START], profiles: [profile] };
    await expect(delegations.issueDelegation({ subject: "narrower", scope: { ...child, mountPrefixes: [join(project, "private")] } })).resolves.toBeDefined();
    for (const mountPrefixes of [[secret], ["*"], [`${project}-other`]]) {
      expectAxis(await refusal(delegations.issueDelegation({ subject: "wider", scope: { ...child, mountPrefixes } })), "mount_prefixes");
    }
  });
});

describe("the server's data dir", () => {
  it("is never mounted, nor anything above it, not even by a root that may mount anything", async () => {
    for (const hostPath of [server.dataDir, join(server.dataDir, "workspaces"), join(server.dataDir, "no-such-file"), "/", join(project, "data")]) {
      const error = await refusal(everything.submitOperation(sh("true", [{ hostPath, path: "/p" }])));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({
        reason: "MOUNT_FORBIDDEN",
        metadata: { field: "spec.execution_start.mounts[0].host_path" },
      });
    }
  });
});

describe("a read-only mount", () => {
  it("shows the project inside and cannot be written through: the host file is unchanged, no descriptor of it is left inside", async () => {
    const script = [
      "grep -q original /project/readme.txt || exit 3",
      // bwrap got the sources as descriptors 6 and up; none may remain open in the sandbox.
      "for fd in 6 7 8; do [ -e /proc/$$/fd/$fd ] && exit 4; done",
      "if echo pwned > /project/readme.txt; then exit 5; fi",
      "if touch /project/new; then exit 6; fi",
      "exit 0",
    ].join("\n");
    const operation = await runToEnd(scoped, sh(script, [{ hostPath: `${project}/private/..`, path: "/project" }]));
    expect(operation.stopCause?.message ?? "").toBe("");
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(readFileSync(join(project, "readme.txt"), "utf8")).toBe("original\n");
    expect(existsSync(join(project, "new"))).toBe(false);
    // The operation records the resolved path: what was judged and bound.
    const spec = operation.spec?.kind;
    expect(spec?.case === "executionStart" && spec.value.mounts.map((m) => m.hostPath)).toEqual([project]);
  });

  it("is the only kind a host path may be: read-write outside the workspace is InvalidArgument naming the field", async () => {
    expectFieldViolation(
      await refusal(scoped.submitOperation(sh("true", [{ hostPath: project, path: "/project", readWrite: true }]))),
      "spec.execution_start.mounts[0].read_write",
    );
    expectFieldViolation(await refusal(scoped.submitOperation(sh("true", [{ hostPath: project, path: "/run/amctl" }]))), "spec.execution_start.mounts[0].path");
  });
});

describe("between admission and the attempt", () => {
  it("a directory swapped for a link does not redirect the mount: the attempt fails and sees nothing behind the link", async () => {
    writeFileSync(join(secret, "behind-link"), "secret\n");
    mkdirSync(join(project, "swapped"));
    chmodSync(join(project, "swapped"), 0o777);
    // One execution at a time under this root: the mounting one waits queued behind a sleeper.
    const oneAtATime = operations(
      await mintRoot(await operatorOf(server.dataDir), {
        scope: { ...fullScope, mountPrefixes: [project], budget: create(BudgetSchema, { ...fullScope.budget, agentConcurrency: 1n }) },
      }),
    );
    const { operation: sleeper } = await oneAtATime.submitOperation(sh("sleep 2", []));
    const { operation: mounting } = await oneAtATime.submitOperation(sh("cat /p/behind-link", [{ hostPath: join(project, "swapped"), path: "/p" }]));
    expect((await oneAtATime.getOperation({ name: mounting!.name })).operation?.state).toBe(TaskState.QUEUED);
    renameSync(join(project, "swapped"), join(project, "swapped-away"));
    symlinkSync(secret, join(project, "swapped"));
    const ended = (await waitForEnd(oneAtATime, mounting!.name, 60_000)).operation;
    expect(ended.state).toBe(TaskState.FAILED);
    expect(ended.stopCause?.reason).toBe(StopReason.MOUNT_FAILED);
    await waitForEnd(oneAtATime, sleeper!.name, 60_000);
  });
});

describe("a workspace mount", () => {
  it("is read-write: what the execution writes there stays in its workspace", async () => {
    const operation = await runToEnd(scoped, sh("echo result > /out/r.txt", [{ hostPath: "out/results", path: "/out", readWrite: true }]));
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(readFileSync(join(workspaceOf(operation.name), "out", "results", "r.txt"), "utf8")).toBe("result\n");
  });

  it("may not leave the workspace", async () => {
    expectFieldViolation(
      await refusal(scoped.submitOperation(sh("true", [{ hostPath: "../other", path: "/out", readWrite: true }]))),
      "spec.execution_start.mounts[0].host_path",
    );
  });

  it("does not follow a link an earlier attempt planted in place of its directory", async () => {
    const pwned = join(secret, "pwned");
    // Attempt 1 replaces the mounted directory with a link to a host directory and fails; attempt 2 would write through it.
    const script = `if [ ! -e "$HOME/attempted" ]; then touch "$HOME/attempted"; rmdir "$HOME/out"; ln -s ${secret} "$HOME/out"; exit 1; fi; touch /out/pwned`;
    const operation = await runToEnd(
      scoped,
      sh(script, [{ hostPath: "out", path: "/out", readWrite: true }], { retryPolicy: { maxAttempts: 2, initialBackoff: { nanos: 100_000_000 } } }),
    );
    expect(operation.attempt).toBe(2);
    expect(operation.state).toBe(TaskState.FAILED);
    expect(operation.stopCause?.reason).toBe(StopReason.MOUNT_FAILED);
    expect(existsSync(pwned)).toBe(false);
  });
});

describe("the artifactAccess gate", () => {
  it("decides each mount with its path: an allowed one is recorded on the operation and in the audit log; a denied one refuses the submit, audited", async () => {
    const { operation } = await scoped.submitOperation(sh("true", [{ hostPath: project, path: "/project" }]));
    expect(operation!.policyDecisions).toEqual([expect.objectContaining({ gate: PolicyGate.ARTIFACT_ACCESS, rule: "test.allow-artifacts", allowed: true })]);

    const denial = await refusal(scoped.submitOperation(sh("true", [{ hostPath: join(project, "private"), path: "/private" }])));
    expect(denial.code).toBe(Code.PermissionDenied);
    expect(denial.findDetails(ErrorInfoSchema)[0]).toMatchObject({
      reason: "POLICY_DENIED",
      metadata: { gate: "artifactAccess", rule: "test.no-private-mounts" },
    });
    expect(denial.findDetails(PolicyDecisionSchema)).toMatchObject([{ gate: PolicyGate.ARTIFACT_ACCESS, rule: "test.no-private-mounts", allowed: false }]);

    // A dry run (EvaluatePolicy) judges the mounts as admission does.
    const dryRun = await policyClient(server.url, scopedToken).evaluatePolicy({
      subject: { case: "operation", value: sh("true", [{ hostPath: join(project, "private"), path: "/private" }]) },
    });
    expect(dryRun.allowed).toBe(false);
    expect(denialOf(dryRun).code).toBe("PERMISSION_DENIED");
    expect(dryRun.decisions).toEqual([expect.objectContaining({ gate: PolicyGate.ARTIFACT_ACCESS, rule: "test.no-private-mounts", allowed: false })]);

    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
    const records = await allAuditRecords(audit);
    expect(records.find((record) => record.resource === operation!.name)?.decision).toMatchObject({
      allowed: true,
      gates: [PolicyGate.ARTIFACT_ACCESS],
      rule: "test.allow-artifacts",
    });
    expect(
      records.some(
        (record) =>
          record.decision?.allowed === false && record.decision.gates.includes(PolicyGate.ARTIFACT_ACCESS) && record.decision.rule === "test.no-private-mounts",
      ),
    ).toBe(true);
  });
});

describe("a container's mounts", () => {
  it("reach the runtime as --mount type=bind: host paths readonly, workspace directories read-write", async () => {
    const request = create(SubmitOperationRequestSchema, {
      requestId: requestId("container"),
      profile,
      spec: {
        kind: {
          case: "containerRun",
          value: {
            image: `registry.test/prints@sha256:${"c".repeat(64)}`,
            argv: ["true"],
            mounts: [
              { hostPath: project, path: "/project" },
              { hostPath: "out", path: "/out", readWrite: true },
            ],
          },
        },
      },
      requestedBudget: { sandboxMemoryBytes: 256n * 1024n ** 2n },
    });
    const operation = await runToEnd(scoped, request);
    expect(operation.state).toBe(TaskState.COMPLETED);
    const argv = operation.artifact?.kind.case === "containerExecutionRecord" ? operation.artifact.kind.value.argv : [];
    expect(argv).toEqual(
      expect.arrayContaining([
        `type=bind,source=${project},target=/project,readonly`,
        `type=bind,source=${join(realpathSync(workspaceOf(operation.name)), "out")},target=/out`,
      ]),
    );
  });

  it("are judged as an execution's: outside the prefixes is refused with the axis named", async () => {
    const request = create(SubmitOperationRequestSchema, {
      requestId: requestId("container"),
      profile,
      spec: {
        kind: { case: "containerRun", value: { image: `registry.test/prints@sha256:${"c".repeat(64)}`, mounts: [{ hostPath: secret, path: "/secret" }] } },
      },
    });
    expectAxis(await refusal(scoped.submitOperation(request)), "mount_prefixes");
  });
});

describe("amctl", () => {
  it("submit --mount runs an execution with a read-only host path and a read-write workspace directory", async () => {
    const env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: scopedToken };
    const result = await amctl(
      [
        "submit",
        "--profile",
        profile,
        "--exec",
        "--mount",
        `${project}:/project`,
        "--mount",
        "out:/out:rw",
        "--wait",
        "--json",
        "--",
        "cp",
        "/project/readme.txt",
        "/out/copy.txt",
      ],
      env,
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const name = /"name":\s*"(operations\/[^"]+)"/.exec(result.stdout)![1]!;
    expect(readFileSync(join(workspaceOf(name), "out", "copy.txt"), "utf8")).toBe("original\n");
  });

  it("delegation issue --mount-prefix outside the caller's is refused, naming the axis", async () => {
    const result = await amctl(["delegation", "issue", "--subject", "wider", "--mount-prefix", secret], { AMCTL_SERVER: server.url, AMCTL_TOKEN: scopedToken });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("mount_prefixes");
  });
});

describe("on a server that runs executions on remote workers", () => {
  it("mounts are refused: the worker's host paths are not the server's to resolve or judge", async () => {
    const dispatcher = await startTestServer({ remoteWorkers: { leaseTtlMs: 10_000 } });
    try {
      const client = operations(await mintRoot(await operatorOf(dispatcher.dataDir), { scope: { ...fullScope, mountPrefixes: ["*"] } }), dispatcher.url);
      const target = await createProfile(operations(dispatcher.token, dispatcher.url), "workers");
      const error = await refusal(client.submitOperation(execution(target, ["true"], { mounts: [{ hostPath: project, path: "/project" }] })));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.findDetails(ErrorInfoSchema)[0]?.reason).toBe("MOUNTS_ON_REMOTE_WORKERS");
    } finally {
      await dispatcher.close();
    }
  });
});
