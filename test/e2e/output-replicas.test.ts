// Execution output across replicas on one PostgreSQL database: the output of an execution,
// kept in the shared store, is followed live through every replica — the one whose runner
// runs it and the other, which learns of new bytes only by reading the store — each line exactly
// once, and replayed whole by both afterwards.
import { expect, it } from "vitest";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { createProfile, execution, operationsClient, waitForEnd } from "../helpers/operations.js";
import { lines, outputClient, readAll } from "../helpers/output.js";
import { startReplicas, stoppedAfterEach } from "../helpers/replicas.js";

const { database } = clusterForFile();
const started = stoppedAfterEach();

it("followers on every replica get the output as it is produced, each line once", { timeout: 90_000 }, async () => {
  const replicas = await startReplicas(await database("output"), 2);
  started.push(...replicas);
  const client = operationsClient(replicas[0]!.url);
  const profile = await createProfile(client, "replicated");
  const { operation } = await client.submitOperation(execution(profile, lines(60, 25)));
  const name = operation!.name;
  // Both follow from the start while it runs (queued or running yet: a follower waits for the first attempt).
  const followed = await Promise.all(replicas.map((replica) => readAll(outputClient(replica), { name, follow: true })));
  const expected = Array.from({ length: 60 }, (_, i) => `line ${i}\n`).join("");
  for (const { text, ends } of followed) {
    expect(text.stdout).toBe(expected);
    expect(text.stderr).toBe("err 0\nerr 10\nerr 20\nerr 30\nerr 40\nerr 50\n");
    expect(ends.map((end) => [end.stream, end.truncated]).sort()).toEqual([
      ["stderr", false],
      ["stdout", false],
    ]);
  }
  expect((await waitForEnd(client, name)).operation.state).toBe(TaskState.COMPLETED);
  for (const replica of replicas) expect((await readAll(outputClient(replica), { name })).text.stdout).toBe(expected);
});
