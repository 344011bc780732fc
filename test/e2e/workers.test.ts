// Remote workers end to end: a server started with remote workers, `amctl worker` processes
// on real sockets, real task processes. Tasks spread over workers and honour selectors; a
// worker killed mid-task loses its lease and the task completes on another exactly once, a
// late report under the dead lease is refused; cancel reaches the worker's process group;
// each task gets its own credential; budgets are enforced on the worker; the usage a worker
// reports adds up saturating and is settled within the operation's budget.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { AttemptResult, WorkerService, type ConnectResponse, type TaskAssignment } from "../../src/gen/agentmachine/v1/worker_service_pb.js";
import { bearer } from "../helpers/auth.js";
import { commandLine, createProfile, execution, isAlive, operationsClient, processesOf, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { budgetRefusal, errorInfo, issueAgent, refusal, roomyBudget, wideRoot } from "../helpers/runtime.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { startWorker, stopWorker, workerToken, type WorkerProcess } from "../helpers/workers.js";

const LEASE_TTL_MS = 1500;
const RETRY = { maxAttempts: 2, initialBackoff: durationFromMs(20), maxBackoff: durationFromMs(100) };

let server: TestServer;
let client: OperationsClient;
let profile: string;
const workers: WorkerProcess[] = [];

async function worker(labels: string, subject: string, capacity = 2): Promise<WorkerProcess> {
  const started = startWorker(server.url, await workerToken(server.dataDir, subject), ["--capacity", String(capacity), "--labels", labels]);
  workers.push(started);
  await started.name();
  return started;
}

function workerClient(token: string, url = server.url) {
  return createClient(WorkerService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));
}

/** The host pid of the task's process whose command line is `command`, once it runs (workers run on this host). */
function sleeperOf(operation: string, command: string): number | undefined {
  return processesOf(operation).find((pid) => commandLine(pid) === command);
}

async function waitForState(name: string, state: TaskState, timeoutMs = 20_000) {
  await expect.poll(async () => (await client.getOperation({ name })).operation?.state, { timeout: timeoutMs }).toBe(state);
  return (await client.getOperation({ name })).operation!;
}

beforeAll(async () => {
  server = await startTestServer({ remoteWorkers: { leaseTtlMs: LEASE_TTL_MS } });
  client = operationsClient(server.url);
  profile = await createProfile(client, "workers");
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map(stopWorker));
});
afterAll(() => server.close());

describe("dispatch", () => {
  it("spreads tasks over the workers, and hands each task its own credential, not the worker's", async () => {
    const [a, b] = [await worker("zone=a", "worker-a"), await worker("zone=b", "worker-b")];
    // Each task reports the digest of its credential as progress (fd 3): a sandboxed task can
    // write only to its own workspace, which its worker removes when the task ends.
    const script = 'printf \'{"message": "%s"}\\n\' "$(echo "$AMCTL_TOKEN" | sha256sum | cut -c1-64)" >&3; sleep 1';
    const names = [];
    for (let i = 0; i < 4; i += 1) {
      const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", script]));
      names.push(operation!.name);
    }
    const ended = await Promise.all(names.map((name) => waitForEnd(client, name)));
    expect(ended.map(({ operation }) => operation.state)).toEqual(names.map(() => TaskState.COMPLETED));
    const ran = new Set(ended.map(({ operation }) => operation.worker));
    expect(ran).toEqual(new Set([await a.name(), await b.name()]));
    const digests = ended.map(({ events }) => events.flatMap((event) => (event.attributes.case === "progress" ? [event.attributes.value.message] : [])).at(-1));
    for (const digest of digests) expect(digest).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(digests).size).toBe(4);
    const workerDigests = [a, b].map((w) =>
      createHash("sha256")
        .update(`${readFileSync(w.tokenFile, "utf8")}\n`)
        .digest("hex"),
    );
    for (const digest of workerDigests) expect(digests).not.toContain(digest);
  });

  it("runs a task only on a worker carrying its selector's labels, and keeps it queued while none does", async () => {
    await worker("zone=a", "worker-a");
    const b = await worker("zone=b", "worker-b");
    const { operation: pinned } = await client.submitOperation(execution(profile, ["true"], { workerSelector: { zone: "b" } }));
    expect((await waitForEnd(client, pinned!.name)).operation.worker).toBe(await b.name());

    const { operation: nowhere } = await client.submitOperation(execution(profile, ["true"], { workerSelector: { zone: "c" } }));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect((await client.getOperation({ name: nowhere!.name })).operation?.state).toBe(TaskState.QUEUED);
    await client.cancelOperation({ name: nowhere!.name, reason: "no such zone" });
    expect((await waitForEnd(client, nowhere!.name)).operation.state).toBe(TaskState.CANCELLED);
  });

  it("passes a cancel to the worker, which stops the whole process group", async () => {
    await worker("zone=a", "worker-a");
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", "sleep 600 & wait"]));
    // The grandchild by its host pid (the task's shell would tell its pid in the sandbox's PID namespace).
    await expect.poll(() => sleeperOf(operation!.name, "sleep 600"), { timeout: 20_000 }).toBeDefined();
    const pid = sleeperOf(operation!.name, "sleep 600")!;
    await client.cancelOperation({ name: operation!.name, reason: "enough" });
    expect((await waitForEnd(client, operation!.name)).operation.state).toBe(TaskState.CANCELLED);
    await expect.poll(() => isAlive(pid), { timeout: 10_000 }).toBe(false);
    expect(processesOf(operation!.name)).toEqual([]);
  });

  it("enforces the task's budget on the worker", async () => {
    await worker("zone=a", "worker-a");
    const spin = "const end = Date.now() + 60000; while (Date.now() < end);";
    const request = execution(profile, [process.execPath, "-e", spin], {}, { cpuGpuComputeSeconds: 1n });
    const { operation } = await client.submitOperation(request);
    const ended = (await waitForEnd(client, operation!.name, 30_000)).operation;
    expect(ended.state).toBe(TaskState.FAILED);
    expect(ended.stopCause?.reason).toBe(StopReason.BUDGET_EXHAUSTED);
    expect(ended.stopCause?.dimension).toBe(BudgetDimension.CPU_GPU_COMPUTE_SECONDS);
  });
});

describe("usage a worker reports", () => {
  /** A worker of the test's own on a raw WorkerService stream, which reports whatever the test says. */
  async function rawWorker(subject: string) {
    const worker = workerClient(await workerToken(server.dataDir, subject));
    const stop = new AbortController();
    const instructions = worker.connect({ capacity: 1 }, { signal: stop.signal })[Symbol.asyncIterator]();
    const next = async () => (await instructions.next()).value as ConnectResponse;
    const welcome = (await next()).instruction;
    if (welcome.case !== "welcome") throw new Error(`expected a welcome, got ${welcome.case}`);
    return {
      client: worker,
      name: welcome.value.worker,
      async assignment(): Promise<TaskAssignment> {
        for (;;) {
          const { instruction } = await next();
          if (instruction.case === "assignment") return instruction.value;
        }
      },
      close: () => stop.abort(),
    };
  }

  it("saturates at 2^64−1 instead of failing the settlement: the task ends, and its delegation keeps no more than the operation's budget spent", async () => {
    const MAX_UINT64 = (1n << 64n) - 1n;
    const agent = await issueAgent(
      await wideRoot(server.url, server.dataDir),
      server.url,
      "agent-of-raw-worker",
      roomyBudget({ cpuGpuComputeSeconds: 1000n, wallClockSeconds: 1000n }),
    );
    const worker = await rawWorker("raw-worker");
    try {
      const { operation } = await agent.clients.operations.submitOperation(
        execution(profile, ["true"], { retryPolicy: RETRY }, { cpuGpuComputeSeconds: 100n, wallClockSeconds: 100n }),
      );
      const name = operation!.name;
      // The first attempt fails after 10 s of each, the second claims 2^64 − 1 of everything:
      // the attempts add up to 2^64 − 1 + 10.
      const first = await worker.assignment();
      expect(first.operation?.name).toBe(name);
      const cause = { reason: StopReason.EXIT_CODE, message: "exit code 1" };
      await worker.client.reportOutcome({
        worker: worker.name,
        lease: first.lease,
        result: AttemptResult.FAILED,
        cause,
        retryable: true,
        usage: { cpuGpuComputeSeconds: 10n, wallClockSeconds: 10n },
      });
      const second = await worker.assignment();
      expect([second.operation?.name, second.lease?.attempt]).toEqual([name, 2]);
      const everything = { cpuGpuComputeSeconds: MAX_UINT64, wallClockSeconds: MAX_UINT64, sandboxMemoryBytes: MAX_UINT64, localDiskBytes: MAX_UINT64 };
      await worker.client.reportOutcome({ worker: worker.name, lease: second.lease, result: AttemptResult.COMPLETED, usage: everything });

      const { operation: ended } = await waitForEnd(client, name);
      expect(ended).toMatchObject({ state: TaskState.COMPLETED, usage: everything });
      // The ledger settled: the 100 s of each the operation reserved are spent, nothing more.
      for (const dimension of ["cpuGpuComputeSeconds", "wallClockSeconds"] as const) {
        const over = await refusal(
          agent.clients.operations.submitOperation(execution(profile, ["true"], {}, { cpuGpuComputeSeconds: 1n, wallClockSeconds: 1n, [dimension]: 901n })),
        );
        expect(budgetRefusal(over)).toEqual({ account: agent.delegation.name, dimension, requested: 901n, remaining: 900n });
      }
    } finally {
      worker.close();
    }
  });
});

describe("a lost worker", () => {
  it("loses its lease when killed mid-task: the task completes on another worker exactly once, and the dead lease's late report is refused", async () => {
    // The first attempt runs on the only worker yet; there, and only there (tasks share no
    // place to count attempts in: each sees its own workspace alone), it sleeps long enough to
    // be killed mid-task; the retry, on the other worker, finishes at once.
    const first = await worker("zone=a", "worker-a", 1);
    const script = 'touch started; case "$(pwd)" in "$SLOW"/*) sleep 5 ;; esac; touch done';
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", script], { env: { SLOW: first.workDir! }, retryPolicy: RETRY }));
    const name = operation!.name;
    const running = await waitForState(name, TaskState.RUNNING);
    expect(running.worker).toBe(await first.name());
    const assigned = await first.waitForLog((line) => line.msg === "assigned" && line.operation === name);
    const second = await worker("zone=a", "worker-b", 1);
    const firstWorkspace = join(first.workDir!, name.replace("operations/", ""));
    await expect.poll(() => sleeperOf(name, "sleep 5"), { timeout: 20_000 }).toBeDefined();
    expect(existsSync(join(firstWorkspace, "started"))).toBe(true);
    first.child.kill("SIGKILL");

    const { events, operation: ended } = await waitForEnd(client, name, 30_000);
    expect(ended.state).toBe(TaskState.COMPLETED);
    expect(ended.attempt).toBe(2);
    expect(ended.worker).toBe(await second.name());
    const retry = events.find((event) => event.type === EventType.RETRY);
    expect(retry?.attributes.case === "retry" ? retry.attributes.value.cause?.reason : undefined).toBe(StopReason.WORKER_LOST);
    expect(events.filter((event) => event.type === EventType.COMPLETE)).toHaveLength(1);
    // The killed worker's task died with it (a surviving first run would also have finished by
    // now, in the workspace its dead worker could not remove).
    await new Promise((resolve) => setTimeout(resolve, 5500));
    expect(existsSync(join(firstWorkspace, "done"))).toBe(false);
    expect(processesOf(name)).toEqual([]);

    const late = await refusal(
      workerClient(readFileSync(first.tokenFile, "utf8")).reportOutcome({
        worker: await first.name(),
        lease: { operation: name, attempt: 1, fencingToken: BigInt(assigned.fencingToken as string) },
        result: AttemptResult.COMPLETED,
      }),
    );
    expect(late.code).toBe(Code.FailedPrecondition);
    expect(errorInfo(late)?.reason).toBe("LEASE_REJECTED");
    const after = (await client.getOperation({ name })).operation!;
    expect([after.state, after.attempt, after.worker]).toEqual([TaskState.COMPLETED, 2, await second.name()]);
    // Its own waits add up to more than 60 s on a loaded machine (20 + 30 + 5.5 s, and two workers' starts).
  }, 120_000);
});

describe("a worker that stops", () => {
  it("stops its tasks on SIGTERM and reports them failed (retryable), so they are retried on another worker at once", async () => {
    const a = await worker("zone=a", "worker-a", 1);
    // Sleeps on the first worker only (see "a lost worker").
    const script = 'case "$(pwd)" in "$SLOW"/*) sleep 600 ;; esac';
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", script], { env: { SLOW: a.workDir! }, retryPolicy: RETRY }));
    const name = operation!.name;
    await waitForState(name, TaskState.RUNNING);
    await expect.poll(() => sleeperOf(name, "sleep 600"), { timeout: 20_000 }).toBeDefined();
    const sleeper = sleeperOf(name, "sleep 600")!;
    const b = await worker("zone=a", "worker-b", 1);
    a.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(isAlive(sleeper)).toBe(false);

    const { events, operation: ended } = await waitForEnd(client, name, 30_000);
    expect([ended.state, ended.attempt, ended.worker]).toEqual([TaskState.COMPLETED, 2, await b.name()]);
    const retry = events.find((event) => event.type === EventType.RETRY);
    expect(retry?.attributes.case === "retry" ? retry.attributes.value.cause?.reason : undefined).toBe(StopReason.WORKER_STOPPING);
  });
});

describe("a worker's workspaces", () => {
  it("are made in a private directory of its own unless --work-dir says where, removed when the worker stops", async () => {
    const started = startWorker(server.url, await workerToken(server.dataDir, "worker-tmp"), ["--capacity", "1"], true);
    workers.push(started);
    await started.name();
    // The task reports its working directory as progress (fd 3); the sleep lets it be read first.
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", 'printf \'{"message": "%s"}\\n\' "$(pwd)" >&3; sleep 1']));
    const { operation: ended, events } = await waitForEnd(client, operation!.name);
    expect(ended.state).toBe(TaskState.COMPLETED);
    const workspace = events.flatMap((event) => (event.attributes.case === "progress" ? [event.attributes.value.message] : [])).at(-1)!;
    expect(workspace).toMatch(/^\//);
    const workDir = dirname(workspace);
    expect(basename(workDir)).toMatch(/^amctl-worker-/);
    expect(dirname(workDir)).toBe(tmpdir());
    expect(existsSync(workspace)).toBe(false); // removed with its task
    // Private: the worker's alone, but for search (no listing) by the sandboxes' group, whose
    // bubblewrap reaches each workspace by its path (src/sandbox/sandbox.ts, letGroupTraverse).
    const { mode, gid } = statSync(workDir);
    expect({ mode: mode & 0o777, gid }).toEqual({ mode: 0o710, gid: 65534 });
    await stopWorker(started);
    expect(existsSync(workDir)).toBe(false);
  });
});

describe("who may be a worker", () => {
  it("refuses a credential without worker profiles", async () => {
    const none = await workerToken(server.dataDir, "nobody", []);
    const error = await refusal(
      (async () => {
        for await (const _ of workerClient(none).connect({ capacity: 1 })) break;
      })(),
    );
    expect(error.code).toBe(Code.PermissionDenied);
    expect(errorInfo(error)?.reason).toBe("NOT_A_WORKER");
  });

  it("gives a worker only tasks of the profiles its delegation names", async () => {
    const other = await createProfile(client, "workers-other");
    const onlyOther = startWorker(server.url, await workerToken(server.dataDir, "other-worker", [other]), ["--capacity", "1"]);
    workers.push(onlyOther);
    await onlyOther.name();
    const { operation } = await client.submitOperation(execution(profile, ["true"]));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect((await client.getOperation({ name: operation!.name })).operation?.state).toBe(TaskState.QUEUED);
    const general = await worker("zone=a", "worker-a");
    expect((await waitForEnd(client, operation!.name)).operation.worker).toBe(await general.name());
    const { operation: inOther } = await client.submitOperation(execution(other, ["true"]));
    expect((await waitForEnd(client, inOther!.name)).operation.state).toBe(TaskState.COMPLETED);
  });
});

describe("a server without workers", () => {
  let plain: TestServer;
  beforeAll(async () => {
    plain = await startTestServer();
  });
  afterAll(() => plain.close());

  it("refuses workers and worker selectors with FailedPrecondition", async () => {
    const connect = workerClient(plain.token, plain.url).connect({ capacity: 1 });
    const error = await refusal(
      (async () => {
        for await (const _ of connect) break;
      })(),
    );
    expect([error.code, errorInfo(error)?.reason]).toEqual([Code.FailedPrecondition, "WORKERS_DISABLED"]);
    const plainClient = operationsClient(plain.url);
    const plainProfile = await createProfile(plainClient, "plain");
    const submit = await refusal(plainClient.submitOperation(execution(plainProfile, ["true"], { workerSelector: { zone: "a" } })));
    expect([submit.code, errorInfo(submit)?.reason]).toEqual([Code.FailedPrecondition, "WORKERS_DISABLED"]);
    expect(ConnectError.from(submit).rawMessage).toContain("--workers");
  });
});
