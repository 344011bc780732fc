// examples/clients/python: stubs generated from proto/ by Debian's protoc and grpc_python_plugin,
// run by the system Python with Debian's grpcio and protobuf, against a real server over gRPC
// (HTTP/2 on a local port). The Debian packages are installed when missing.
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { ensureDebianPackages } from "../helpers/debian-packages.js";
import { operationsClient, waitForEnd } from "../helpers/operations.js";
import { repoRoot, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
const example = join(repoRoot, "examples/clients/python");
/** Debian's interpreter: `python3` on PATH may be another one, without Debian's modules. */
const PYTHON = "/usr/bin/python3";

let server: TestServer;
let stubs: string;
beforeAll(async () => {
  await ensureDebianPackages(["protobuf-compiler", "protobuf-compiler-grpc", "libprotobuf-dev", "python3-grpcio", "python3-protobuf"]);
  stubs = tempDir("amctl-python-stubs-");
  await run("bash", [join(example, "generate.sh"), stubs]);
  server = await startTestServer();
}, 600_000);
afterAll(async () => {
  await server?.close();
  if (stubs) rmSync(stubs, { recursive: true, force: true });
});

/** Runs the client against the test server; resolves with its exit code and output. */
function client(env: NodeJS.ProcessEnv = {}) {
  return run(PYTHON, [join(example, "client.py"), server.url], {
    cwd: "/tmp",
    env: { ...process.env, AMCTL_TOKEN: server.token, AMCTL_PYTHON_STUBS: stubs, ...env },
    timeout: 60_000,
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
}

/** The lines of `stdout` that start with `word`, split into their words. */
const linesOf = (stdout: string, word: string) =>
  stdout
    .split("\n")
    .filter((line) => line.startsWith(`${word} `))
    .map((line) => line.split(" "));

const WATCH_EVENTS = "agentmachine.v1.OperationService/WatchEvents";

describe("examples/clients/python/client.py", () => {
  let result: { code: number; stdout: string; stderr: string };
  let execution: string;
  beforeAll(async () => {
    result = await client();
    execution = linesOf(result.stdout, "execution")[0]?.[1] ?? expect.fail(`no execution line in:\n${result.stdout}\n${result.stderr}`);
  }, 90_000);

  it("creates a profile, runs an execution and sees each of its events exactly once across a resume, to its terminal state", async () => {
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^profile profiles\/python-[0-9a-f]{12} TASK_STATE_COMPLETED by operations\//m);

    // The server's own record of the execution's events, read by another client.
    const { events, operation } = await waitForEnd(operationsClient(server.url), execution);
    expect(operation.state).toBe(TaskState.COMPLETED);
    const printed = linesOf(result.stdout, "event").map(([, sequence, type, state]) => `${sequence} ${type} ${state}`);
    expect(printed).toEqual(events.map((e) => `${e.sequence} EVENT_TYPE_${EventType[e.type]} TASK_STATE_${TaskState[e.state]}`));
    expect(result.stdout).toContain("75% step 75");
    expect(result.stdout.split("\n")).toContain("terminal TASK_STATE_COMPLETED");

    // It dropped the stream after two events and resumed after the second one's sequence on a
    // second stream (the server saw two), with events still to come.
    const second = String(events[1]!.sequence);
    expect(linesOf(result.stdout, "disconnected")).toEqual([["disconnected", "after", "sequence", second]]);
    expect(linesOf(result.stdout, "resumed")).toEqual([["resumed", "after", "sequence", second]]);
    const lines = result.stdout.split("\n");
    expect(lines.indexOf(`resumed after sequence ${second}`)).toBe(lines.findIndex((line) => line.startsWith(`event ${second} `)) + 2);
    expect(server.logs.filter((line) => line.procedure === WATCH_EVENTS && line.msg === "rpc")).toHaveLength(2);
  });

  it("reads the refusal of a cancel of the finished execution from the grpc-status-details-bin trailer", () => {
    expect(result.stdout).toContain(`refused FAILED_PRECONDITION: ${execution} is completed: cannot cancel`);
    // The standard google.rpc.ErrorInfo, which a client that knows only google.rpc reads.
    expect(result.stdout).toMatch(/^reason ILLEGAL_TRANSITION domain agentmachine\.v1 /m);
  });

  it("without a credential, exits with a message that says what to set", async () => {
    const refused = await client({ AMCTL_TOKEN: "" });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("AMCTL_TOKEN must hold a credential");
  });
});
