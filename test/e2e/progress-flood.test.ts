// A progress flood: an execution writing hundreds of megabytes to its progress pipe (fd 3)
// without a newline must neither end the server (readline held the whole line, and 700 MB of
// it ended the process with `RangeError: Invalid string length`) nor make it hold the flood.
// Real sockets, a real process; the server runs in this process, so its memory is ours.
import { afterAll, beforeAll, expect, it } from "vitest";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { createProfile, execution, operationsClient, run, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const MiB = 1024 * 1024;

let server: TestServer;
let client: OperationsClient;
let profile: string;

beforeAll(async () => {
  server = await startTestServer({ execution: { envAllowlist: ["PATH"], outputLimitBytes: 4096, defaultWallClockSeconds: 120, killGraceMs: 500 } });
  client = operationsClient(server.url);
  profile = await createProfile(client, "flood");
});
afterAll(() => server.close());

it("700 MB on fd 3 without a newline: the execution completes, later progress still arrives, the server holds none of it and keeps answering", async () => {
  // 700 MB is past V8's longest string (~512 MiB), where a reader holding the line fails.
  // The sleep lets the last report be read before the process exits.
  const script = `head -c 700000000 /dev/zero >&3; printf '\\n{"percent": 70, "message": "after the flood"}\\n' >&3; sleep 1; echo done`;
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
  try {
    const { operation, events } = await run(client, execution(profile, ["sh", "-c", script]));
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(operation.artifact?.kind).toMatchObject({ case: "localAgentExecution", value: { exitCode: 0, stdoutBytes: 5n } });
    const progress = events.filter((e) => e.type === EventType.PROGRESS).map((e) => e.attributes.value);
    expect(progress.at(-1)).toMatchObject({ percent: 70, message: "after the flood" });
  } finally {
    clearInterval(sampler);
  }
  // Held, the flood would be at least 700 MB (readline peaked near 400 MB for 300 MB).
  expect(rssPeak - rssBefore).toBeLessThan(150 * MiB);

  const { operation } = await run(client, execution(profile, ["true"]));
  expect(operation.state).toBe(TaskState.COMPLETED);
});
