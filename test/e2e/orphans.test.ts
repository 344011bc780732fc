// A server killed with SIGKILL leaves its executions' processes behind; the next server on the
// same data dir stops them before it recovers their operations, so no agent keeps running
// ungoverned.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { createProfile, execution, isAlive, operationsClient, waitForEnd } from "../helpers/operations.js";
import { startChildServer, tempDir } from "../helpers/server.js";

it("a restart after a crash kills the process group the crashed server left running", async () => {
  const dataDir = tempDir("amctl-orphans-");
  const first = await startChildServer([], { dataDir });
  const client = operationsClient(first.url);
  const profile = await createProfile(client, "orphans");
  const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", "sleep 60 & echo $! > grandchild.pid; wait"]));
  const name = operation!.name;
  const pidFile = join(dataDir, "workspaces", name.replace("operations/", ""), "grandchild.pid");
  await expect.poll(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim() !== "", { timeout: 10_000 }).toBe(true);
  // The process record is written just after the spawn.
  await expect.poll(async () => (await client.getOperation({ name })).operation?.artifact?.kind.value, { timeout: 5_000 }).toMatchObject({ processId: expect.any(Number) });
  const grandchild = Number(readFileSync(pidFile, "utf8"));

  first.child.kill("SIGKILL");
  await first.exited;
  expect(isAlive(grandchild)).toBe(true); // orphaned, still running

  const second = await startChildServer([], { dataDir });
  try {
    await expect.poll(() => isAlive(grandchild), { timeout: 5_000 }).toBe(false);
    const { operation: recovered } = await waitForEnd(operationsClient(second.url), name);
    expect(recovered).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: "server_restart" } });
    expect(second.stderr()).toContain("stopped a process group left running by a previous server");
  } finally {
    second.child.kill("SIGTERM");
    await second.exited;
  }
});
