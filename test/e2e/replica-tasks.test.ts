// Tasks across replicas on one PostgreSQL database: each running task belongs to the runner
// that claimed it (Operation.runner) and that runner's heartbeats. A replica that starts leaves
// the tasks of live runners alone; a runner that stops sending heartbeats (SIGKILL) has its
// running task taken over by a live replica (retry with cause runner_lost); a cancel through
// one replica stops the process that runs on another. A policy bundle applied through one
// replica is read by the others on their next heartbeat. agentConcurrency and runtime charging
// hold across replicas.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { CallKind } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { EventType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { commandLine, createProfile, execution, isAlive, operationsClient, processesOf, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { bundleSource, policyAdmin, policyClient } from "../helpers/policy.js";
import { clientsFor, issueAgent, roomyBudget, startCredentialed, wideRoot } from "../helpers/runtime.js";
import { dataDirSharingOperator, startChildReplica, startReplicas, stoppedAfterEach } from "../helpers/replicas.js";
import { startTestServer } from "../helpers/server.js";

const { database } = clusterForFile();

const config: Partial<ServerConfig> = {
  execution: { ...defaultConfig.execution, killGraceMs: 300 },
  runnerHeartbeatMs: 300,
  // Longer than a child replica's heartbeat period (2 s by default).
  runnerTimeoutMs: 5_000,
};

/** What each test started, stopped after it whatever happened. */
const started = stoppedAfterEach();

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out; last value: ${JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const operationOf = (client: OperationsClient, name: string) => async () => (await client.getOperation({ name })).operation!;

it("a replica that starts leaves the task a live replica runs alone", async () => {
  const url = await database("start");
  const [first] = await startReplicas(url, 1, config);
  started.push(first!);
  const client = operationsClient(first!.url);
  const profile = await createProfile(client, "tasks");
  const { operation } = await client.submitOperation(execution(profile, ["sleep", "20"]));
  const running = await until(operationOf(client, operation!.name), (op) => op.state === TaskState.RUNNING);
  expect(running.runner).toMatch(/^runners\//);

  const second = await startTestServer({ ...config, store: url, dataDir: dataDirSharingOperator(first!.dataDir) });
  started.push(second);
  // Two heartbeat periods of the newcomer: it has looked at the task and left it alone.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const after = (await client.getOperation({ name: operation!.name })).operation!;
  expect([after.state, after.attempt, after.runner]).toEqual([TaskState.RUNNING, 1, running.runner]);
  await client.cancelOperation({ name: operation!.name });
  expect((await waitForEnd(client, operation!.name)).operation.state).toBe(TaskState.CANCELLED);
}, 60_000);

it("the running task of a replica killed with SIGKILL is taken over by a live one: retried there, cause runner_lost", async () => {
  const url = await database("takeover");
  const [survivor] = await startReplicas(url, 1, config);
  started.push(survivor!);
  const victim = await startChildReplica(url, survivor!);
  started.push(victim);
  const viaVictim = operationsClient(victim.url);
  const viaSurvivor = operationsClient(survivor!.url);
  const profile = await createProfile(viaSurvivor, "takeover");
  // Short, so the victim's orphaned process (nobody may kill a process on another machine) ends soon.
  const request = execution(profile, ["sleep", "4"], { retryPolicy: { maxAttempts: 2, initialBackoff: durationFromMs(50) } });
  const { operation } = await viaVictim.submitOperation(request);
  const first = await until(operationOf(viaSurvivor, operation!.name), (op) => op.state === TaskState.RUNNING);
  victim.child.kill("SIGKILL");
  await victim.exited;

  const { events, operation: ended } = await waitForEnd(viaSurvivor, operation!.name, 60_000);
  const retry = events.find((event) => event.type === EventType.RETRY);
  expect(retry?.attributes).toMatchObject({ case: "retry", value: { cause: { reason: StopReason.RUNNER_LOST } } });
  expect(ended.state).toBe(TaskState.COMPLETED);
  expect(ended.attempt).toBe(2);
  expect(ended.runner).not.toBe(first.runner);
}, 90_000);

it("a cancel through one replica stops the process that runs on another", async () => {
  const url = await database("cancel");
  const [a, b] = await startReplicas(url, 2, config);
  started.push(a!, b!);
  const viaA = operationsClient(a!.url);
  const viaB = operationsClient(b!.url);
  const profile = await createProfile(viaA, "cancel");
  const { operation } = await viaA.submitOperation(execution(profile, ["sleep", "30"]));
  const running = await until(
    operationOf(viaA, operation!.name),
    (op) => op.state === TaskState.RUNNING && op.artifact?.kind.case === "localAgentExecution" && op.artifact.kind.value.processId > 0,
  );
  // The recorded pid (the sandbox's outermost process) and the program itself, by its host pid.
  const pid = running.artifact!.kind.case === "localAgentExecution" ? running.artifact!.kind.value.processId : 0;
  expect(isAlive(pid)).toBe(true);
  const program = await until(
    async () => processesOf(operation!.name).find((p) => commandLine(p) === "/usr/bin/sleep 30" || commandLine(p) === "sleep 30"),
    (found) => found !== undefined,
    10_000,
  );

  await viaB.cancelOperation({ name: operation!.name, reason: "from the other replica" });
  expect((await waitForEnd(viaB, operation!.name)).operation.state).toBe(TaskState.CANCELLED);
  await until(
    async () => isAlive(pid) || isAlive(program!),
    (alive) => !alive,
    10_000,
  );
  expect(processesOf(operation!.name)).toEqual([]);
}, 60_000);

it("a policy bundle applied through one replica decides on the others within a heartbeat or two", async () => {
  const url = await database("policy");
  const [a, b] = await startReplicas(url, 2, config);
  started.push(a!, b!);
  const viaB = operationsClient(b!.url);
  const profile = await createProfile(viaB, "policy");
  const grant = (tool: string) => ({ requestId: `grant-${tool}-${Date.now()}`, profile, spec: { kind: { case: "toolGrantApply" as const, value: { tool } } } });
  expect((await viaB.submitOperation(grant("git"))).created).toBe(true);

  const admin = policyClient(a!.url, await policyAdmin(a!.dataDir, [ProfileType.PERSONAL]));
  await admin.applyPolicyBundle({
    profileType: ProfileType.PERSONAL,
    source: bundleSource("personal", [{ id: "only-rg", gate: "toolGrant", effect: "allow", when: 'input.tool == "rg"' }]),
  });
  const refusal = await until(
    () =>
      viaB.submitOperation(grant("git")).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      ),
    (error) => error !== undefined,
    10_000,
  );
  expect(refusal!.code).toBe(Code.PermissionDenied);
  expect(refusal!.findDetails(ErrorInfoSchema)[0]?.metadata.rule).toBe("no-matching-allow");
}, 60_000);

it("agentConcurrency holds across replicas: never more running under a delegation than it allows, the others wait queued and all run", async () => {
  const url = await database("concurrency");
  const [a, b] = await startReplicas(url, 2, config);
  started.push(a!, b!);
  const root = await wideRoot(a!.url, a!.dataDir);
  const profile = await createProfile(root.operations, "concurrency");
  const agent = await issueAgent(root, a!.url, "two-at-once", roomyBudget({ agentConcurrency: 2n }));
  const viaA = agent.clients.operations;
  const viaB = clientsFor(b!.url, agent.token).operations;
  const names: string[] = [];
  for (let i = 0; i < 6; i += 1) {
    const { operation } = await (i % 2 === 0 ? viaA : viaB).submitOperation(execution(profile, ["sleep", "30"]));
    names.push(operation!.name);
  }
  let maxRunning = 0;
  const ended = new Set<string>();
  while (ended.size < names.length) {
    const states = await Promise.all(names.map(async (name) => (await viaA.getOperation({ name })).operation!));
    const running = states.filter((op) => op.state === TaskState.RUNNING);
    maxRunning = Math.max(maxRunning, running.length);
    for (const op of states) if (op.state === TaskState.CANCELLED) ended.add(op.name);
    // Free a slot: cancel one running task, through the replica that does not run it half the time.
    if (running.length > 0) await (ended.size % 2 === 0 ? viaA : viaB).cancelOperation({ name: running[0]!.name });
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  expect(maxRunning).toBeLessThanOrEqual(2);
  expect(maxRunning).toBe(2);
  for (const name of names) {
    const { events } = await waitForEnd(viaA, name);
    // Every one of them ran (none was refused or left queued).
    expect(events.some((event) => event.type === EventType.START)).toBe(true);
  }
}, 120_000);

it("runtime charging through both replicas at once never overspends the operation's budget", async () => {
  const url = await database("charging");
  const [a, b] = await startReplicas(url, 2, config);
  started.push(a!, b!);
  const root = await wideRoot(a!.url, a!.dataDir);
  const profile = await createProfile(root.operations, "charging");
  const exec = await startCredentialed(a!.url, a!.dataDir, root.operations, profile, { connectorCalls: 20n });
  const runtimes = [exec.runtime, clientsFor(b!.url, exec.token).runtime];
  // Once a call would overspend, the task ends: calls after that are refused as not running.
  const answers = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) =>
      runtimes[i % 2]!.authorizeCall({ operation: exec.operation.name, call: { kind: CallKind.CONNECTOR, connector: "github" } }),
    ),
  );
  expect(answers.filter((answer) => answer.status === "fulfilled" && answer.value.allowed)).toHaveLength(20);
  const { operation } = await waitForEnd(root.operations, exec.operation.name);
  expect(operation.usage?.connectorCalls).toBe(20n);
  expect(operation.stopCause).toMatchObject({ reason: StopReason.BUDGET_EXHAUSTED });
}, 60_000);

it("a revocation through one replica ends the streams the credential holds open on another", async () => {
  const url = await database("revoke-stream");
  const [a, b] = await startReplicas(url, 2, { ...config, credentialCacheMs: 300 });
  started.push(a!, b!);
  const root = await wideRoot(a!.url, a!.dataDir);
  const agent = await issueAgent(root, a!.url, "watcher", roomyBudget());
  const stream = clientsFor(b!.url, agent.token).operations.watchEvents({})[Symbol.asyncIterator]();
  const ended = (async () => {
    for (;;) await stream.next();
  })().then(
    () => undefined,
    (error: unknown) => ConnectError.from(error),
  );
  // The stream is open (the first call went through) before the revocation.
  await new Promise((resolve) => setTimeout(resolve, 500));
  await root.delegations.revokeDelegation({ name: agent.delegation.name, reason: "retired" });
  const error = await Promise.race([ended, new Promise<"still open">((resolve) => setTimeout(() => resolve("still open"), 10_000))]);
  expect(error === "still open" ? error : error?.code).toBe(Code.Unauthenticated);
}, 60_000);
