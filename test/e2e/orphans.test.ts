// A server killed with SIGKILL leaves its unsandboxed executions' processes (and containers)
// behind; the next server on the same data dir stops them before it recovers their operations,
// so no agent keeps running ungoverned. A sandboxed execution dies with its server.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { commandLine, createProfile, execution, isAlive, operationsClient, processesOf, requestId, waitForEnd } from "../helpers/operations.js";
import { repoRoot, startChildServer, tempDir } from "../helpers/server.js";

/** The host pid of the execution's `sleep 60`, once it runs. */
const sleeperOf = (name: string) => processesOf(name).find((pid) => commandLine(pid) === "sleep 60");

it("a restart after a crash kills the process group the crashed server left running", async () => {
  // Unsandboxed: a sandbox dies with its server (bubblewrap's --die-with-parent, next test), so
  // only an unconfined execution can outlive a crash; what is tested is the next server's
  // sweep of what a crashed one left running, not confinement.
  const dataDir = tempDir("amctl-orphans-");
  const first = await startChildServer(["--unsafe-no-sandbox"], { dataDir });
  const client = operationsClient(first.url);
  const profile = await createProfile(client, "orphans");
  const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", "sleep 60 & wait"]));
  const name = operation!.name;
  await expect.poll(() => sleeperOf(name), { timeout: 10_000 }).toBeDefined();
  // The process record is written just after the spawn.
  await expect
    .poll(async () => (await client.getOperation({ name })).operation?.artifact?.kind.value, { timeout: 5_000 })
    .toMatchObject({ processId: expect.any(Number) });
  const grandchild = sleeperOf(name)!;

  first.child.kill("SIGKILL");
  await first.exited;
  expect(isAlive(grandchild)).toBe(true); // orphaned, still running

  const second = await startChildServer(["--unsafe-no-sandbox"], { dataDir });
  try {
    await expect.poll(() => isAlive(grandchild), { timeout: 5_000 }).toBe(false);
    expect(processesOf(name)).toEqual([]);
    const { operation: recovered } = await waitForEnd(operationsClient(second.url), name);
    expect(recovered).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.SERVER_RESTART } });
    expect(second.stderr()).toMatch(/"stopped":"process group \d+","msg":"stopped what a previous server left running"/);
  } finally {
    second.child.kill("SIGTERM");
    await second.exited;
  }
});

it("a sandboxed execution does not outlive a crash of its server; the restart records it failed", async () => {
  const dataDir = tempDir("amctl-orphans-");
  const first = await startChildServer([], { dataDir });
  const client = operationsClient(first.url);
  const profile = await createProfile(client, "orphans");
  const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", "sleep 60 & wait"]));
  const name = operation!.name;
  await expect.poll(() => sleeperOf(name), { timeout: 10_000 }).toBeDefined();
  const grandchild = sleeperOf(name)!;

  first.child.kill("SIGKILL");
  await first.exited;
  await expect.poll(() => processesOf(name), { timeout: 5_000 }).toEqual([]);
  // A process that is exiting has given up its environment (so processesOf no longer finds it)
  // a moment before it is a zombie: under load that moment was seen.
  await expect.poll(() => isAlive(grandchild), { timeout: 5_000 }).toBe(false);

  const second = await startChildServer([], { dataDir });
  try {
    const { operation: recovered } = await waitForEnd(operationsClient(second.url), name);
    expect(recovered).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.SERVER_RESTART } });
  } finally {
    second.child.kill("SIGTERM");
    await second.exited;
  }
});

it("a restart after a crash removes the container the crashed server left running", async () => {
  // The stand-in runtime (test/fixtures/fake-container-runtime.mjs) keeps its containers in a
  // directory named by AMCTL_FAKE_RUNTIME_DIR; a wrapper names it, as a real CLI finds its daemon.
  const runtimeDir = tempDir("amctl-orphan-runtime-");
  const runtime = join(runtimeDir, "runtime");
  writeFileSync(
    runtime,
    `#!/bin/sh\nAMCTL_FAKE_RUNTIME_DIR='${runtimeDir}' exec '${process.execPath}' '${join(repoRoot, "test/fixtures/fake-container-runtime.mjs")}' "$@"\n`,
  );
  chmodSync(runtime, 0o755);
  const dataDir = tempDir("amctl-orphans-");
  const first = await startChildServer(["--container-runtime", runtime], { dataDir });
  const client = operationsClient(first.url);
  const profile = await createProfile(client, "orphans");
  const { operation } = await client.submitOperation({
    requestId: requestId("container"),
    profile,
    spec: { kind: { case: "containerRun", value: { image: `registry.test/hangs@sha256:${"c".repeat(64)}` } } },
  });
  const name = `amctl-${operation!.name.replace("operations/", "").toLowerCase()}`;
  const pidFile = join(runtimeDir, `${name}.pid`);
  await expect.poll(() => existsSync(pidFile), { timeout: 10_000 }).toBe(true);
  const container = Number(readFileSync(pidFile, "utf8"));

  first.child.kill("SIGKILL");
  await first.exited;
  expect(isAlive(container)).toBe(true); // the container outlives the server, as under a daemon

  const second = await startChildServer(["--container-runtime", runtime], { dataDir });
  try {
    await expect.poll(() => isAlive(container), { timeout: 10_000 }).toBe(false);
    const calls = readFileSync(join(runtimeDir, "calls.jsonl"), "utf8");
    expect(calls).toContain(JSON.stringify({ argv: ["rm", "--force", name] }));
    const { operation: recovered } = await waitForEnd(operationsClient(second.url), operation!.name);
    expect(recovered).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.SERVER_RESTART } });
    expect(second.stderr()).toContain(`"stopped":"container ${name}"`);
  } finally {
    second.child.kill("SIGTERM");
    await second.exited;
  }
});
