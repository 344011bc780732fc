// OperationService end to end: real sockets, a real SQLite file, real child processes.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { EventType, OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import {
  commandLine,
  createProfile,
  execution,
  isAlive,
  operationsClient,
  processesOf,
  requestId,
  run,
  waitForEnd,
  type OperationsClient,
} from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
let client: OperationsClient;
let profile: string;

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal"),
      (e: unknown) => e,
    ),
  );
}

function workspaceOf(name: string): string {
  return join(server.dataDir, "workspaces", name.replace("operations/", ""));
}

beforeAll(async () => {
  server = await startTestServer({
    maxConcurrentExecutions: 2,
    execution: { envAllowlist: ["PATH"], outputLimitBytes: 256, defaultWallClockSeconds: 60, killGraceMs: 500 },
  });
  client = operationsClient(server.url);
  profile = await createProfile(client, "dev");
});
afterAll(() => server.close());

describe("submit", () => {
  it("creates a profile whose artifact is an AgentMachineProfile; a second create of it is AlreadyExists", async () => {
    const { operation } = await run(client, {
      requestId: requestId(),
      spec: { kind: { case: "profileCreate", value: { profileId: "corp", profileType: ProfileType.CORPORATE_FIREWALL } } },
    });
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(operation.artifact?.kind).toMatchObject({
      case: "agentMachineProfile",
      value: { name: "profiles/corp", profileType: ProfileType.CORPORATE_FIREWALL },
    });
    const again = await refusal(
      client.submitOperation({
        requestId: requestId(),
        spec: { kind: { case: "profileCreate", value: { profileId: "corp", profileType: ProfileType.PERSONAL } } },
      }),
    );
    expect(again.code).toBe(Code.AlreadyExists);
  });

  it("is idempotent on request_id: same body returns the same operation, another body is AlreadyExists", async () => {
    const request = execution(profile, ["true"]);
    const first = await client.submitOperation(request);
    const second = await client.submitOperation(request);
    expect(first.created).toBe(true);
    expect(second).toMatchObject({ created: false, operation: { name: first.operation!.name } });
    const conflict = await refusal(client.submitOperation({ ...request, labels: { other: "body" } }));
    expect(conflict.code).toBe(Code.AlreadyExists);
    expect(conflict.findDetails(ErrorInfoSchema)[0]?.reason).toBe("REQUEST_ID_REUSED");
  });

  it("refuses an operation without a profile with InvalidArgument, and an unknown profile with FailedPrecondition, storing nothing", async () => {
    const before = (await client.listOperations({ pageSize: 1000 })).operations.length;
    const missing = await refusal(client.submitOperation({ ...execution(profile, ["true"]), profile: "" }));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.findDetails(ViolationsSchema)[0]?.violations[0]?.ruleId).toBe("submit.profile");
    const unknown = await refusal(client.submitOperation(execution("profiles/nope", ["true"])));
    expect(unknown.code).toBe(Code.FailedPrecondition);
    expect(unknown.findDetails(ErrorInfoSchema)[0]?.reason).toBe("PROFILE_NOT_FOUND");
    expect((await client.listOperations({ pageSize: 1000 })).operations.length).toBe(before);
  });

  it.each([["container.run", { case: "containerRun" as const, value: { image: `alpine@sha256:${"a".repeat(64)}`, argv: ["true"] } }, "no container runtime"]])(
    "refuses %s at admission with FailedPrecondition naming what is missing",
    async (_name, spec, why) => {
      const error = await refusal(client.submitOperation({ requestId: requestId(), profile, spec: { kind: spec } }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toContain(why);
    },
  );

  it("refuses a working directory outside the workspace with InvalidArgument naming the field", async () => {
    const request = execution(profile, ["true"], { workingDirectory: "../../etc" });
    const error = await refusal(client.submitOperation(request));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.findDetails(ViolationsSchema)[0]?.violations[0]?.field?.elements.map((e) => e.fieldName)).toEqual([
      "spec",
      "execution_start",
      "working_directory",
    ]);
  });
});

describe("local process executor", () => {
  it("runs argv without a shell in the workspace, reports progress from fd 3, and completes on exit 0", async () => {
    const script =
      "require('fs').writeFileSync('made-here', process.cwd()); for (const p of [25, 75]) require('fs').writeSync(3, JSON.stringify({ percent: p, message: 'step ' + p }) + '\\n'); console.log('$HOME is not expanded')";
    const { events, operation } = await run(client, execution(profile, [process.execPath, "-e", script]));
    // Reports that arrive while one is being written are coalesced: the last one always lands.
    expect(events.map((e) => EventType[e.type]).filter((t, i, all) => t !== all[i - 1])).toEqual(["START", "PROGRESS", "COMPLETE"]);
    const progress = events.filter((e) => e.attributes.case === "progress").map((e) => e.attributes.value);
    expect(progress.at(-1)).toMatchObject({ percent: 75, message: "step 75" });
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(operation.artifact?.kind).toMatchObject({ case: "localAgentExecution", value: { exitCode: 0 } });
    const workspace = workspaceOf(operation.name);
    expect(readFileSync(join(workspace, "made-here"), "utf8")).toBe(workspace);
    expect(readFileSync(join(workspace, "stdout.1.log"), "utf8")).toBe("$HOME is not expanded\n");
  });

  it("coalesces a flood of progress reports, keeping the latest", async () => {
    const script = "const fs = require('fs'); for (let i = 1; i <= 20000; i++) fs.writeSync(3, JSON.stringify({ percent: i / 200, message: 'n' + i }) + '\\n')";
    const { events } = await run(client, execution(profile, [process.execPath, "-e", script]));
    const progress = events.filter((e) => e.attributes.case === "progress").map((e) => e.attributes.value);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.length).toBeLessThan(2000);
    expect(progress.at(-1)).toMatchObject({ percent: 100, message: "n20000" });
  });

  it("gives the process only allowlisted and explicit environment variables", async () => {
    process.env.AMCTL_TEST_SERVER_SECRET = "must-not-leak";
    const request = execution(profile, [process.execPath, "-e", "console.log(JSON.stringify(Object.keys(process.env).sort()))"], { env: { EXPLICIT: "yes" } });
    const { operation } = await run(client, request);
    const keys = JSON.parse(readFileSync(join(workspaceOf(operation.name), "stdout.1.log"), "utf8")) as string[];
    // AMCTL_SERVER, AMCTL_TOKEN and AMCTL_OPERATION: the attempt's own execution credential and where to use it;
    // the model SDKs' base URLs and keys: the plane's model gateway and that same credential (docs/model-gateway.md).
    expect(keys).toEqual([
      "AMCTL_OPERATION",
      "AMCTL_PROGRESS_FD",
      "AMCTL_SERVER",
      "AMCTL_TOKEN",
      "ANTHROPIC_API_KEY",
      "ANTHROPIC_BASE_URL",
      "EXPLICIT",
      "HOME",
      "OLLAMA_HOST",
      "OPENAI_API_KEY",
      "OPENAI_BASE_URL",
      "PATH",
    ]);
    delete process.env.AMCTL_TEST_SERVER_SECRET;
  });

  it("never returns env values: the process gets them, submit, get and list show the keys only", async () => {
    const secret = `canary-${Date.now()}`;
    const request = execution(profile, [process.execPath, "-e", "process.stdout.write(process.env.API_KEY)"], { env: { API_KEY: secret } });
    const submitted = await client.submitOperation(request);
    const { operation } = await run(client, request);
    expect(readFileSync(join(workspaceOf(operation.name), "stdout.1.log"), "utf8")).toBe(secret);
    const listed = (await client.listOperations({ filter: { profile } })).operations.find((op) => op.name === operation.name);
    for (const seen of [submitted.operation, (await client.getOperation({ name: operation.name })).operation, listed]) {
      expect(seen?.spec?.kind).toMatchObject({ case: "executionStart", value: { env: { API_KEY: "[redacted]" } } });
      expect(JSON.stringify(seen, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(secret);
    }
  });

  it("caps captured output and says it was truncated", async () => {
    const { operation } = await run(client, execution(profile, [process.execPath, "-e", "process.stdout.write('x'.repeat(10000))"]));
    expect(operation.artifact?.kind).toMatchObject({ value: { stdoutBytes: 256n, outputTruncated: true } });
    expect(readFileSync(join(workspaceOf(operation.name), "stdout.1.log"), "utf8")).toBe("x".repeat(256));
  });

  it("retries a failing exit code per the retry policy, then fails with the cause", async () => {
    const request = execution(profile, ["sh", "-c", "exit 3"], { retryPolicy: { maxAttempts: 2, initialBackoff: { seconds: 0n, nanos: 50_000_000 } } });
    const { events, operation } = await run(client, request);
    expect(events.map((e) => `${EventType[e.type]}:${e.attempt}`)).toEqual(["START:1", "RETRY:1", "START:2", "FAILURE:2"]);
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      attempt: 2,
      stopCause: { reason: StopReason.EXIT_CODE, message: "process exited with code 3" },
    });
  });

  it("fails without retrying when the program does not exist", async () => {
    const request = execution(profile, ["/no/such/program"], { retryPolicy: { maxAttempts: 3 } });
    const { operation } = await run(client, request);
    expect(operation).toMatchObject({ state: TaskState.FAILED, attempt: 1, stopCause: { reason: StopReason.SPAWN_FAILED } });
  });

  it("fails a process that outlives its wall-clock budget, naming the dimension", async () => {
    const { operation } = await run(client, execution(profile, ["sleep", "30"], {}, { wallClockSeconds: 1n }));
    expect(operation.stopCause).toMatchObject({ reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.WALL_CLOCK_SECONDS });
  });
});

describe("cancel", () => {
  it("stops the whole process group of a running execution and records cancelled", async () => {
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", "sleep 30 & wait"]));
    const name = operation!.name;
    // The grandchild by its host pid (a pid the sandbox's shell could tell is of its own PID namespace).
    const sleeper = () => processesOf(name).find((pid) => commandLine(pid) === "sleep 30");
    await expect.poll(sleeper, { timeout: 10_000 }).toBeDefined();
    const grandchild = sleeper()!;
    const { cancelOperation } = await client.cancelOperation({ name, reason: "user pressed stop" });
    expect(cancelOperation?.type).toBe(OperationType.EXECUTION_CANCEL);
    const { operation: ended, events } = await waitForEnd(client, name);
    expect(ended.state).toBe(TaskState.CANCELLED);
    expect(events.at(-1)?.attributes).toMatchObject({ case: "cancel", value: { cause: { reason: StopReason.CANCELLED, message: "user pressed stop" } } });
    expect(isAlive(grandchild)).toBe(false);
    expect(processesOf(name)).toEqual([]);
    // Terminal: a further cancel is FailedPrecondition.
    expect((await refusal(client.cancelOperation({ name }))).code).toBe(Code.FailedPrecondition);
  });

  it("cancelling twice while it is still stopping returns the same cancel operation", async () => {
    const { operation } = await client.submitOperation(
      execution(profile, ["sh", "-c", "trap 'sleep 1; exit 0' TERM; echo ready > ready; sleep 30 & wait; wait"]),
    );
    const name = operation!.name;
    await expect.poll(() => existsSync(join(workspaceOf(name), "ready")), { timeout: 10_000 }).toBe(true);
    const first = await client.cancelOperation({ name });
    const second = await client.cancelOperation({ name, reason: "again" });
    expect(second.cancelOperation?.name).toBe(first.cancelOperation?.name);
    expect((await waitForEnd(client, name)).operation.state).toBe(TaskState.CANCELLED);
  });

  it("cancels a queued execution at once, without running it", async () => {
    const blockers = await Promise.all([0, 1].map(() => client.submitOperation(execution(profile, ["sleep", "30"]))));
    const { operation: queued } = await client.submitOperation(execution(profile, ["true"]));
    expect((await client.getOperation({ name: queued!.name })).operation?.state).toBe(TaskState.QUEUED);
    await client.cancelOperation({ name: queued!.name });
    const { events, operation } = await waitForEnd(client, queued!.name);
    expect(operation).toMatchObject({ state: TaskState.CANCELLED, attempt: 0 });
    expect(events.map((e) => EventType[e.type])).toEqual(["CANCEL"]);
    for (const { operation: blocker } of blockers) await client.cancelOperation({ name: blocker!.name });
  });

  it("refuses to cancel a completed operation or one that is not an execution", async () => {
    const { operation } = await run(client, execution(profile, ["true"]));
    expect((await refusal(client.cancelOperation({ name: operation.name }))).code).toBe(Code.FailedPrecondition);
    expect((await refusal(client.cancelOperation({ name: "operations/NOPE" }))).code).toBe(Code.NotFound);
  });
});

describe("tool grants and model provider bindings", () => {
  it("applies and revokes a grant; the grant records its revoke command; a second revoke is refused", async () => {
    const { operation: grant } = await run(client, { requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } });
    expect(grant.artifact?.kind).toMatchObject({ case: "toolGrantRecord", value: { tool: "git", applyCommandRef: grant.name, revokeCommandRef: "" } });
    const { operation: revoke } = await run(client, {
      requestId: requestId(),
      profile,
      spec: { kind: { case: "toolGrantRevoke", value: { grant: grant.name } } },
    });
    expect(revoke.state).toBe(TaskState.COMPLETED);
    const { operation: revoked } = await client.getOperation({ name: grant.name });
    expect(revoked?.artifact?.kind).toMatchObject({ value: { revokeCommandRef: revoke.name } });
    const again = await refusal(
      client.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantRevoke", value: { grant: grant.name } } } }),
    );
    expect(again.code).toBe(Code.FailedPrecondition);
  });

  it("never lets a revoke cross profiles", async () => {
    const other = await createProfile(client, "other");
    const { operation: grant } = await run(client, { requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: "browser" } } } });
    const error = await refusal(
      client.submitOperation({ requestId: requestId(), profile: other, spec: { kind: { case: "toolGrantRevoke", value: { grant: grant.name } } } }),
    );
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toContain("another profile");
  });

  it("binds a model provider only to a provider profile", async () => {
    const bind = (target: string) => ({
      requestId: requestId(),
      profile: target,
      spec: { kind: { case: "modelProviderBind" as const, value: { provider: "ollama" } } },
    });
    expect((await refusal(client.submitOperation(bind(profile)))).code).toBe(Code.FailedPrecondition);
    const local = await createProfile(client, "local-models", ProfileType.LOCAL_MODEL_PROVIDER);
    const { operation } = await run(client, bind(local));
    expect(operation.artifact?.kind).toMatchObject({
      case: "modelProviderBinding",
      value: { provider: "ollama", profileType: ProfileType.LOCAL_MODEL_PROVIDER, operationType: OperationType.MODEL_PROVIDER_BIND },
    });
  });
});

describe("list", () => {
  it("pages newest first through a filter with signed tokens", async () => {
    const listProfile = await createProfile(client, "listing");
    const made = [];
    for (let i = 0; i < 7; i += 1)
      made.push(
        (
          await run(client, {
            requestId: requestId(),
            profile: listProfile,
            labels: { batch: "list" },
            spec: { kind: { case: "toolGrantApply", value: { tool: `t${i}` } } },
          })
        ).operation.name,
      );
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listOperations({ pageSize: 3, pageToken, filter: { labels: { batch: "list" }, profile: listProfile } });
      seen.push(...page.operations.map((o) => o.name));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual([...made].reverse());
  });

  it("accepts a page token with the same filter whatever the order of its labels", async () => {
    for (let i = 0; i < 2; i += 1)
      await client.submitOperation({
        requestId: requestId(),
        profile,
        labels: { first: "1", second: "2" },
        spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
      });
    const page = await client.listOperations({ pageSize: 1, filter: { labels: { first: "1", second: "2" } } });
    const next = await client.listOperations({ pageSize: 1, pageToken: page.nextPageToken, filter: { labels: { second: "2", first: "1" } } });
    expect(next.operations).toHaveLength(1);
    expect(next.operations[0]?.name).not.toBe(page.operations[0]?.name);
  });

  it("refuses an edited page token, or one used with another filter, with InvalidArgument naming page_token", async () => {
    const { nextPageToken } = await client.listOperations({ pageSize: 1 });
    for (const [token, filter] of [
      [`${nextPageToken}x`, undefined],
      [nextPageToken, { types: [OperationType.EXECUTION_START] }],
    ] as [string, { types: OperationType[] } | undefined][]) {
      const error = await refusal(client.listOperations({ pageSize: 1, pageToken: token, filter }));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.findDetails(ViolationsSchema)[0]?.violations[0]?.field?.elements[0]?.fieldName).toBe("page_token");
    }
  });
});

describe("watch", () => {
  it("WatchOperation replays after a cursor and ends after the terminal event", async () => {
    const { events, operation } = await run(client, execution(profile, ["true"]));
    const replay = [];
    for await (const { event } of client.watchOperation({ name: operation.name, afterSequence: events[0]!.sequence })) replay.push(event!.sequence);
    expect(replay).toEqual(events.slice(1).map((e) => e.sequence));
    const none = [];
    for await (const { event } of client.watchOperation({ name: operation.name, afterSequence: operation.lastSequence })) none.push(event);
    expect(none).toEqual([]);
  });

  it("WatchEvents sends bookmarks that never go backwards while idle", async () => {
    const quiet = await startTestServer({ bookmarkIntervalMs: 100 });
    try {
      const abort = new AbortController();
      const bookmarks: bigint[] = [];
      for await (const { kind } of operationsClient(quiet.url).watchEvents({ filter: { profile: "profiles/none" } }, { signal: abort.signal })) {
        if (kind.case === "bookmark") bookmarks.push(kind.value.sequence);
        if (bookmarks.length === 3) break;
      }
      abort.abort();
      expect(bookmarks).toEqual([...bookmarks].sort());
    } finally {
      await quiet.close();
    }
  });
});

describe("restart", () => {
  it("recovers an execution that was running when the server stopped: failed with cause server_restart", async () => {
    const first = await startTestServer();
    const firstClient = operationsClient(first.url);
    const p = await createProfile(firstClient, "restart");
    const { operation } = await firstClient.submitOperation(execution(p, ["sleep", "30"]));
    await expect.poll(async () => (await firstClient.getOperation({ name: operation!.name })).operation?.state, { timeout: 10_000 }).toBe(TaskState.RUNNING);
    await first.close();
    const second = await startTestServer({ dataDir: first.dataDir });
    try {
      const { operation: recovered, events } = await waitForEnd(operationsClient(second.url), operation!.name);
      expect(recovered).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.SERVER_RESTART } });
      expect(events.at(-1)?.type).toBe(EventType.FAILURE);
      // The idempotency key still answers after the restart.
      expect(readdirSync(join(first.dataDir, "workspaces")).length).toBeGreaterThan(0);
    } finally {
      await second.close();
    }
  });
});

describe("defaults", () => {
  it("a requested budget fills in only the dimensions it sets, and never changes the server's defaults", async () => {
    const { operation: first } = await client.submitOperation(execution(profile, ["true"], {}, { tokens: 7n }));
    const { operation: second } = await client.submitOperation(execution(profile, ["true"]));
    expect(first?.requestedBudget?.tokens).toBe(7n);
    expect(second?.requestedBudget?.tokens).toBe(160_000n);
    expect(first?.requestedBudget?.modelCalls).toBe(second?.requestedBudget?.modelCalls);
  });
});
