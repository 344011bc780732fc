// Workspace files end to end (issue 19), over real sockets, with executions sandboxed in
// bubblewrap: what an execution wrote is listed and downloaded with matching digests (one file
// in many chunks), by the API and by `amctl files`; what an adversarial execution plants — a
// link to /etc/shadow or to the server's data dir, a link to / used as a directory, a FIFO, a
// hard link, a file named like the server's output capture — is listed without being followed
// and never downloaded; another profile's workspace is NotFound exactly like a missing
// operation; the artifactAccess gate decides each download, and both its allowances and its
// denials are in the audit log; workspaces go at the end of their retention period, on an
// explicit delete, and (oldest ended first) when all of them reach their disk limit, past which
// new executions are refused with ResourceExhausted naming the limit. An execution on a remote
// worker left its files there (the worker removes them): FailedPrecondition says so.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, PolicyGate, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { WorkspaceFileType, WorkspaceService, type WorkspaceFile } from "../../src/gen/agentmachine/v1/workspace_service_pb.js";
import { DOWNLOAD_CHUNK_BYTES } from "../../src/services/chunked-download.js";
import { workspaceOf } from "../../src/executors/workspace-files.js";
import { workspaceBytes } from "../../src/executors/workspace-disk.js";
import { allAuditRecords } from "../helpers/audit-records.js";
import { bearer } from "../helpers/auth.js";
import { fieldPath } from "../helpers/violations.js";
import { amctl } from "../helpers/cli.js";
import { createProfile, execution, operationsClient, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { bundleSource, policyAdmin, policyClient } from "../helpers/policy.js";
import { errorShape, startWithScopedCallers, type ScopedCallers } from "../helpers/scoped-callers.js";
import { startTestServer, tempDir, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";
import { errorInfo, refusal } from "../helpers/runtime.js";
import { startWorker, stopWorker, workerToken, type WorkerProcess } from "../helpers/workers.js";

type WorkspaceClient = Client<typeof WorkspaceService>;

function workspaceClient(url: string, token?: string): WorkspaceClient {
  return createClient(WorkspaceService, createGrpcTransport({ baseUrl: url, interceptors: token === undefined ? authInterceptors(url) : [bearer(token)] }));
}

const reasonOf = (error: ConnectError) => errorInfo(error)?.reason;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function listAll(client: WorkspaceClient, operation: string, path = "", pageSize = 0): Promise<WorkspaceFile[]> {
  const files: WorkspaceFile[] = [];
  let pageToken = "";
  do {
    const page = await client.listWorkspaceFiles({ operation, path, pageSize, pageToken });
    files.push(...page.files);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return files;
}

async function download(client: WorkspaceClient, operation: string, path: string): Promise<{ file: WorkspaceFile; chunks: Uint8Array[]; bytes: Buffer }> {
  let file: WorkspaceFile | undefined;
  const chunks: Uint8Array[] = [];
  for await (const { part } of client.downloadWorkspaceFile({ operation, path })) {
    if (part.case === "file") {
      expect(chunks).toHaveLength(0); // the file comes first
      file = part.value;
    } else if (part.case === "chunk") chunks.push(part.value);
  }
  return { file: file ?? expect.fail("no file message"), chunks, bytes: Buffer.concat(chunks) };
}

async function runScript(client: OperationsClient, profile: string, script: string, env: Record<string, string> = {}): Promise<Operation> {
  const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", script], { env }));
  return (await waitForEnd(client, operation!.name, 60_000)).operation;
}

/** Writes what a user's agent leaves, and what an adversary plants next to it. */
const LEAVES = `
set -e
mkdir -p out
printf 'the report\\n' > out/report.txt
head -c 300000 /dev/urandom > big.bin
ln -s /etc/shadow shadow-link
ln -s "$DATA_DIR" data-link
ln -s / root-link
mkfifo fifo
printf 'twice\\n' > hard-a
ln hard-a hard-b
printf 'planted\\n' > stdout.7.log
echo "hello from the execution"
`;

describe("workspace files of a sandboxed execution", () => {
  let server: TestServer;
  let ops: OperationsClient;
  let files: WorkspaceClient;
  let profile: string;
  let left: Operation;

  beforeAll(async () => {
    server = await startTestServer();
    ops = operationsClient(server.url);
    files = workspaceClient(server.url);
    profile = await createProfile(ops, "files");
    left = await runScript(ops, profile, LEAVES, { DATA_DIR: server.dataDir });
    expect(left.state, JSON.stringify(left.stopCause)).toBe(TaskState.COMPLETED);
  }, 90_000);
  afterAll(() => server?.close());

  it("lists every entry with size, mode and the SHA-256 the bytes on disk have; links as links, with their targets", async () => {
    const listed = await listAll(files, left.name);
    const byPath = new Map(listed.map((file) => [file.path, file]));
    // stdout.7.log, named like the server's capture of an attempt's output, is left out like the capture itself.
    expect([...byPath.keys()]).toEqual(["big.bin", "data-link", "fifo", "hard-a", "hard-b", "out", "out/report.txt", "root-link", "shadow-link"]);
    const dir = workspaceOf(server.dataDir, left.name);
    const report = byPath.get("out/report.txt")!;
    expect(report).toMatchObject({ type: WorkspaceFileType.REGULAR, sizeBytes: 11n, sha256: sha256(readFileSync(join(dir, "out/report.txt"))) });
    expect(report.mode).toBe(statSync(join(dir, "out/report.txt")).mode & 0o7777);
    expect(byPath.get("out")).toMatchObject({ type: WorkspaceFileType.DIRECTORY, sha256: "" });
    expect(byPath.get("shadow-link")).toMatchObject({ type: WorkspaceFileType.SYMLINK, linkTarget: "/etc/shadow", sha256: "" });
    expect(byPath.get("data-link")).toMatchObject({ type: WorkspaceFileType.SYMLINK, linkTarget: server.dataDir, sha256: "" });
    expect(byPath.get("fifo")).toMatchObject({ type: WorkspaceFileType.OTHER, sha256: "" });
    // A file with another name is never read, not even to hash it.
    expect(byPath.get("hard-a")).toMatchObject({ type: WorkspaceFileType.REGULAR, sha256: "" });
  });

  it("leaves out the server's capture of stdout and stderr, and refuses to hand it out as a file", async () => {
    const listed = (await listAll(files, left.name)).map((file) => file.path);
    expect(listed.filter((path) => /^std(out|err)\.\d+\.log$/.test(path))).toEqual([]);
    expect(existsSync(join(workspaceOf(server.dataDir, left.name), "stdout.1.log"))).toBe(true);
    const error = await refusal(download(files, left.name, "stdout.1.log"));
    expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "SERVER_FILE"]);
  });

  it("pages in path order: small pages add up to the whole list, and an edited token is InvalidArgument", async () => {
    expect(await listAll(files, left.name, "", 2)).toEqual(await listAll(files, left.name));
    const first = await files.listWorkspaceFiles({ operation: left.name, pageSize: 2 });
    const edited = `${first.nextPageToken.slice(0, -2)}${first.nextPageToken.endsWith("A") ? "B" : "A"}A`;
    const error = await refusal(files.listWorkspaceFiles({ operation: left.name, pageSize: 2, pageToken: edited }));
    expect(error.code).toBe(Code.InvalidArgument);
    // A token of one path is not one of another.
    expect((await refusal(files.listWorkspaceFiles({ operation: left.name, path: "out", pageToken: first.nextPageToken }))).code).toBe(Code.InvalidArgument);
  });

  it("downloads a file of many chunks whose bytes have the announced size and digest", async () => {
    const { file, chunks, bytes } = await download(files, left.name, "big.bin");
    expect(chunks.length).toBe(Math.ceil(300_000 / DOWNLOAD_CHUNK_BYTES));
    expect(chunks.every((chunk) => chunk.length > 0 && chunk.length <= DOWNLOAD_CHUNK_BYTES)).toBe(true);
    expect(bytes.length).toBe(300_000);
    expect(file).toMatchObject({ path: "big.bin", sizeBytes: 300_000n, sha256: sha256(bytes) });
    expect(bytes.equals(readFileSync(join(workspaceOf(server.dataDir, left.name), "big.bin")))).toBe(true);
  });

  it("never follows a planted link: not to /etc/shadow, not into the data dir, not through a linked directory", async () => {
    for (const [path, target] of [
      ["shadow-link", "/etc/shadow"],
      ["data-link", server.dataDir],
      ["root-link", "/"],
    ] as const) {
      const error = await refusal(download(files, left.name, path));
      expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "SYMLINK_NOT_FOLLOWED"]);
      expect(error.rawMessage).toContain(`is a symbolic link (to ${target})`);
    }
    for (const through of ["root-link/etc/passwd", "data-link/operator/operator.pub", "root-link/etc"]) {
      const viaDownload = await refusal(download(files, left.name, through));
      expect([viaDownload.code, reasonOf(viaDownload)]).toEqual([Code.FailedPrecondition, "SYMLINK_NOT_FOLLOWED"]);
      const viaList = await refusal(listAll(files, left.name, through));
      expect([viaList.code, reasonOf(viaList)]).toEqual([Code.FailedPrecondition, "SYMLINK_NOT_FOLLOWED"]);
    }
    // Listing the link itself shows the link, not what it points to.
    expect(await listAll(files, left.name, "root-link")).toMatchObject([{ path: "root-link", type: WorkspaceFileType.SYMLINK, linkTarget: "/" }]);
  });

  it("refuses a FIFO (without hanging), a directory and a hard-linked file, and a path that is not there", async () => {
    const cases: [string, Code, string][] = [
      ["fifo", Code.FailedPrecondition, "NOT_A_REGULAR_FILE"],
      ["out", Code.FailedPrecondition, "NOT_A_REGULAR_FILE"],
      ["hard-b", Code.FailedPrecondition, "HARD_LINKED_FILE"],
      ["missing.txt", Code.NotFound, "WORKSPACE_FILE_NOT_FOUND"],
      ["out/report.txt/below", Code.NotFound, "WORKSPACE_FILE_NOT_FOUND"],
    ];
    for (const [path, code, reason] of cases) {
      const error = await refusal(download(files, left.name, path));
      expect([path, error.code, reasonOf(error)]).toEqual([path, code, reason]);
    }
  });

  it("answers a path that leaves the workspace or is malformed with InvalidArgument naming the field", async () => {
    for (const path of ["../x", "/etc/passwd", "out/../../x", "out//report.txt", "./out"]) {
      const error = await refusal(download(files, left.name, path));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.findDetails(ViolationsSchema)[0]?.violations.map(fieldPath)).toEqual(["path"]);
    }
  });

  it("reads a workspace only once its operation has ended, and only of executions", async () => {
    const { operation } = await ops.submitOperation(execution(profile, ["sleep", "30"]));
    try {
      const error = await refusal(listAll(files, operation!.name));
      expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "OPERATION_NOT_TERMINAL"]);
      const deletion = await refusal(files.deleteWorkspace({ operation: operation!.name }));
      expect([deletion.code, reasonOf(deletion)]).toEqual([Code.FailedPrecondition, "OPERATION_NOT_TERMINAL"]);
    } finally {
      await ops.cancelOperation({ name: operation!.name, reason: "test over" });
    }
    const { operations } = await ops.listOperations({ filter: { types: [OperationType.PROFILE_CREATE] } });
    const error = await refusal(listAll(files, operations[0]!.name));
    expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "NO_WORKSPACE"]);
  });

  it("amctl files list and get: the file is saved with the digest the server announced", async () => {
    const env = { AMCTL_TOKEN: server.token };
    const listed = await amctl(["files", "list", left.name, "out", "--server", server.url], env);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^TYPE +MODE +SIZE +SHA256 +PATH\n/);
    const mode = (statSync(join(workspaceOf(server.dataDir, left.name), "out/report.txt")).mode & 0o7777).toString(8).padStart(4, "0");
    expect(listed.stdout).toContain(`file  ${mode}  11    ${sha256(Buffer.from("the report\n"))}  out/report.txt`);
    const target = join(tempDir(), "big.bin");
    const got = await amctl(["files", "get", left.name, "big.bin", "-o", target, "--json", "--server", server.url], env);
    expect(got.code, got.stderr).toBe(0);
    const saved = readFileSync(target);
    expect(JSON.parse(got.stdout)).toEqual({ operation: left.name, path: "big.bin", file: target, sizeBytes: 300_000, sha256: sha256(saved) });
    const refused = await amctl(["files", "get", left.name, "shadow-link", "-o", join(tempDir(), "x"), "--server", server.url], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("symbolic link");
  });

  it("an explicit delete removes the workspace (audited), the operation stays, and a second delete finds nothing", async () => {
    const gone = await runScript(ops, profile, "mkdir -p locked/deep && echo x > locked/deep/f && chmod 500 locked locked/deep");
    const dir = workspaceOf(server.dataDir, gone.name);
    const held = await workspaceBytes(dir, new Map());
    const first = await files.deleteWorkspace({ operation: gone.name });
    expect(first).toMatchObject({ removed: true, freedBytes: BigInt(held) });
    expect(existsSync(dir)).toBe(false);
    expect((await ops.getOperation({ name: gone.name })).operation!.state).toBe(TaskState.COMPLETED);
    expect(await files.deleteWorkspace({ operation: gone.name })).toMatchObject({ removed: false, freedBytes: 0n });
    const error = await refusal(listAll(files, gone.name));
    expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "NO_WORKSPACE"]);
    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
    const deletes = (await allAuditRecords(audit)).filter((r) => r.rpc === "/agentmachine.v1.WorkspaceService/DeleteWorkspace");
    expect(deletes.map((r) => [r.resource, r.decision?.allowed])).toEqual([
      [gone.name, true],
      [gone.name, true],
    ]);
  });
});

describe("the artifactAccess gate decides each download", () => {
  let server: TestServer;
  let ops: OperationsClient;
  let files: WorkspaceClient;
  let left: Operation;

  beforeAll(async () => {
    server = await startTestServer();
    ops = operationsClient(server.url);
    files = workspaceClient(server.url);
    const profile = await createProfile(ops, "gated");
    left = await runScript(ops, profile, "echo public > notes.txt && echo hidden > keys.secret");
    const source = bundleSource("personal", [
      {
        id: "test.no-secrets",
        gate: "artifactAccess",
        effect: "deny",
        when: 'input.workspace_path.endsWith(".secret")',
        description: "Files named *.secret stay on the machine.",
      },
      { id: "test.workspace-files", gate: "artifactAccess", effect: "allow", when: 'input.operation_type == "agent_machine.execution.start"' },
    ]);
    await policyClient(server.url, await policyAdmin(server.dataDir, [ProfileType.PERSONAL])).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source });
  }, 90_000);
  afterAll(() => server?.close());

  it("a denied download is PermissionDenied naming gate and rule, and both the denial and the allowed download are in the audit log", async () => {
    const denied = await refusal(download(files, left.name, "keys.secret"));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(errorInfo(denied)).toMatchObject({ reason: "POLICY_DENIED", metadata: { gate: "artifactAccess", rule: "test.no-secrets" } });
    expect((await download(files, left.name, "notes.txt")).bytes.toString()).toBe("public\n");
    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
    const downloads = (await allAuditRecords(audit)).filter((r) => r.rpc === "/agentmachine.v1.WorkspaceService/DownloadWorkspaceFile");
    expect(downloads.map((r) => ({ allowed: r.decision!.allowed, gates: r.decision!.gates, rule: r.decision!.rule, commandRef: r.commandRef }))).toEqual([
      { allowed: false, gates: [PolicyGate.ARTIFACT_ACCESS], rule: "test.no-secrets", commandRef: "DownloadWorkspaceFile" },
      { allowed: true, gates: [PolicyGate.ARTIFACT_ACCESS], rule: "test.workspace-files", commandRef: "DownloadWorkspaceFile" },
    ]);
    expect(downloads[1]!.resource).toBe(left.name);
    // The two requests differ only in their path, which the digests bind.
    expect(downloads[0]!.requestDigest).not.toBe(downloads[1]!.requestDigest);
  });
});

describe("another profile's workspace", () => {
  let callers: ScopedCallers;
  let mine: Operation;

  beforeAll(async () => {
    callers = await startWithScopedCallers(undefined);
    mine = await runScript(callers.mine.clients.operations, callers.mine.profile, "echo mine > mine.txt");
  }, 90_000);
  afterAll(() => callers?.server.close());

  it("is NotFound to list, download and delete, exactly as an operation that does not exist", async () => {
    const theirs = workspaceClient(callers.server.url, callers.theirs.token);
    const missing = "operations/does-not-exist";
    const calls: [string, (name: string) => Promise<unknown>][] = [
      ["list", (name) => listAll(theirs, name)],
      ["download", (name) => download(theirs, name, "mine.txt")],
      ["delete", (name) => theirs.deleteWorkspace({ operation: name })],
    ];
    for (const [what, call] of calls) {
      const hidden = errorShape(await refusal(call(mine.name)), mine.name);
      expect([what, hidden.code]).toEqual([what, "NotFound"]);
      expect(hidden).toEqual(errorShape(await refusal(call(missing)), missing));
    }
    // Still there for its owner.
    const own = workspaceClient(callers.server.url, callers.mine.token);
    expect((await download(own, mine.name, "mine.txt")).bytes.toString()).toBe("mine\n");
  });
});

describe("retention", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ workspaceRetentionMs: 1500, compactionIntervalMs: 200 });
  });
  afterAll(() => server?.close());

  it("removes an ended operation's workspace after the retention period, and never a running one's", async () => {
    const ops = operationsClient(server.url);
    const profile = await createProfile(ops, "kept");
    const ended = await runScript(ops, profile, "echo done > result.txt && mkdir ro && chmod 500 ro");
    const { operation: running } = await ops.submitOperation(execution(profile, ["sh", "-c", "echo busy > busy.txt; sleep 30"]));
    const endedDir = workspaceOf(server.dataDir, ended.name);
    const runningDir = workspaceOf(server.dataDir, running!.name);
    // Kept for the retention period...
    expect((await listAll(workspaceClient(server.url), ended.name)).map((file) => file.path)).toEqual(["result.txt", "ro"]);
    // ...then swept.
    for (let waited = 0; existsSync(endedDir); waited += 100) {
      if (waited > 10_000) expect.fail("the ended workspace was not removed");
      await sleep(100);
    }
    expect(existsSync(join(runningDir, "busy.txt"))).toBe(true);
    const error = await refusal(listAll(workspaceClient(server.url), ended.name));
    expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "NO_WORKSPACE"]);
    await ops.cancelOperation({ name: running!.name, reason: "test over" });
  }, 60_000);
});

describe("the disk limit of all workspaces", () => {
  const LIMIT = 1024 * 1024;
  let server: TestServer;
  let ops: OperationsClient;
  let profile: string;

  beforeAll(async () => {
    server = await startTestServer({ workspaceDiskLimitBytes: LIMIT });
    ops = operationsClient(server.url);
    profile = await createProfile(ops, "full");
  });
  afterAll(() => server?.close());

  const write = (bytes: number, then = "") => `head -c ${bytes} /dev/zero > data.bin${then}`;

  it("at the limit, the oldest ended workspaces go first; if that is not enough, new executions are ResourceExhausted naming the limit", async () => {
    const a = await runScript(ops, profile, write(600_000));
    const b = await runScript(ops, profile, write(600_000));
    const dir = (operation: Operation | string) => workspaceOf(server.dataDir, typeof operation === "string" ? operation : operation.name);
    expect([existsSync(dir(a)), existsSync(dir(b))]).toEqual([true, true]);
    // 1.2 MB held: admitting the next one removes the oldest ended workspace, a, which is enough.
    const { operation: c } = await ops.submitOperation(execution(profile, ["sh", "-c", write(1_100_000, "; sleep 30")]));
    expect([existsSync(dir(a)), existsSync(dir(b))]).toEqual([false, true]);
    try {
      // c alone, running, holds more than the limit: removing every ended workspace is not enough.
      for (let waited = 0; (await workspaceBytes(dir(c!.name), new Map())) < 1_100_000; waited += 100) {
        if (waited > 20_000) expect.fail("the running execution did not write its file");
        await sleep(100);
      }
      const error = await refusal(ops.submitOperation(execution(profile, ["true"])));
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(errorInfo(error)).toMatchObject({ reason: "WORKSPACE_DISK_FULL", metadata: { limit: "workspace_disk_limit_bytes", limit_bytes: String(LIMIT) } });
      expect(existsSync(dir(b))).toBe(false);
      expect(existsSync(join(dir(c!.name), "data.bin"))).toBe(true);
      // Other operations do not use a workspace and are still admitted.
      await createProfile(ops, "still-admitted");
    } finally {
      await ops.cancelOperation({ name: c!.name, reason: "test over" });
    }
    await waitForEnd(ops, c!.name);
    // Once it has ended, its workspace is the one that goes, and executions are admitted again.
    expect((await runScript(ops, profile, "true")).state).toBe(TaskState.COMPLETED);
    expect(existsSync(dir(c!.name))).toBe(false);
  }, 90_000);
});

describe("an execution on a remote worker", () => {
  let server: TestServer;
  let worker: WorkerProcess;

  beforeAll(async () => {
    server = await startTestServer({ remoteWorkers: { leaseTtlMs: 10_000 } });
    worker = startWorker(server.url, await workerToken(server.dataDir, "worker-files"));
    await worker.name();
  });
  afterAll(async () => {
    if (worker !== undefined) await stopWorker(worker);
    await server?.close();
  });

  it("left its files on the worker, which removed them: FailedPrecondition saying so, naming the worker", async () => {
    const ops = operationsClient(server.url);
    const ran = await runScript(ops, await createProfile(ops, "remote"), "echo remote > out.txt");
    expect(ran.state).toBe(TaskState.COMPLETED);
    const files = workspaceClient(server.url);
    for (const call of [() => listAll(files, ran.name), () => download(files, ran.name, "out.txt")]) {
      const error = await refusal(call());
      expect([error.code, reasonOf(error)]).toEqual([Code.FailedPrecondition, "WORKSPACE_ON_WORKER"]);
      expect(error.rawMessage).toContain(`ran on the remote worker ${ran.worker}, which removed its workspace when the task ended`);
    }
  }, 60_000);
});
