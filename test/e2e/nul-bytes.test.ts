// A NUL byte where a process gets its argv, environment or working directory is InvalidArgument
// at admission, naming the field, by the protovalidate rules of operation.proto (so every
// client language validates alike): nothing is stored, nothing runs, and the server's log never
// holds the value. Before these rules an env value with a NUL reached the log verbatim through
// Node's ERR_INVALID_ARG_VALUE message, and a working directory with a NUL left the operation
// running for ever. Real sockets, one in-process server.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { createProfile, execution, operationsClient, requestId, run, type OperationsClient } from "../helpers/operations.js";
import { fieldPath } from "../helpers/violations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** Carried next to every NUL, so the log can be searched for the value as well as the byte. */
const CANARY = "nul-canary-7f3a";
const IMAGE = `registry.test/tools@sha256:${"c".repeat(64)}`;

let server: TestServer;
let client: OperationsClient;
let profile: string;

beforeAll(async () => {
  server = await startTestServer({ execution: { envAllowlist: ["PATH"], outputLimitBytes: 4096, defaultWallClockSeconds: 60, killGraceMs: 500 } });
  client = operationsClient(server.url);
  profile = await createProfile(client, "nul");
});
afterAll(() => server.close());

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(
    await promise.then(
      () => new Error("expected a refusal"),
      (e: unknown) => e,
    ),
  );
}

async function storedOperations(): Promise<string[]> {
  return (await client.listOperations({ pageSize: 1000 })).operations.map((o) => o.name);
}

function container(argv: string[], env: Record<string, string> = {}): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, {
    requestId: requestId("container"),
    profile,
    spec: { kind: { case: "containerRun", value: { image: IMAGE, argv, env } } },
  });
}

interface Case {
  title: string;
  /** The request with a NUL in the field, and the same request with the NUL taken out. */
  request: (nul: string) => SubmitOperationRequest;
  /** The violation's field; a map key is the client's own, NUL and all. */
  field: string;
}

const cases: Case[] = [
  { title: "execution_start argv", request: (nul) => execution(profile, ["echo", `a${nul}${CANARY}`]), field: "spec.execution_start.argv[1]" },
  {
    title: "execution_start env name",
    request: (nul) => execution(profile, ["true"], { env: { [`X${nul}${CANARY}`]: "v" } }),
    field: `spec.execution_start.env["X\0${CANARY}"]`,
  },
  {
    title: "execution_start env value",
    request: (nul) => execution(profile, ["true"], { env: { X: `v${nul}${CANARY}` } }),
    field: 'spec.execution_start.env["X"]',
  },
  {
    title: "execution_start working_directory",
    request: (nul) => execution(profile, ["true"], { workingDirectory: `sub${nul}${CANARY}` }),
    field: "spec.execution_start.working_directory",
  },
  { title: "container_run argv", request: (nul) => container(["echo", `a${nul}${CANARY}`]), field: "spec.container_run.argv[1]" },
  { title: "container_run env name", request: (nul) => container(["true"], { [`X${nul}${CANARY}`]: "v" }), field: `spec.container_run.env["X\0${CANARY}"]` },
  { title: "container_run env value", request: (nul) => container(["true"], { X: `v${nul}${CANARY}` }), field: 'spec.container_run.env["X"]' },
];

describe("a NUL byte is InvalidArgument at admission naming the field, and nothing is stored", () => {
  it.each(cases)("$title", async ({ request, field }) => {
    const before = await storedOperations();
    const error = await refusal(client.submitOperation(request("\0")));
    expect(error.code).toBe(Code.InvalidArgument);
    const violations = error.findDetails(ViolationsSchema)[0]?.violations ?? [];
    expect(violations.map((v) => ({ field: fieldPath(v), ruleId: v.ruleId, message: v.message }))).toEqual([
      { field, ruleId: "no_nul_byte", message: "must not contain a NUL byte" },
    ]);
    // The message names the field and does not echo the byte (but for a map key, which is the field's name).
    expect(error.rawMessage).toBe(`${field}: must not contain a NUL byte [no_nul_byte]`);
    expect(await storedOperations()).toEqual(before);
  });
});

describe("the same requests without the NUL pass validation", () => {
  it.each(cases.filter((c) => c.title.startsWith("execution_start")))("$title runs", async ({ request }) => {
    const { operation } = await run(client, request(""));
    expect(operation.state).toBe(TaskState.COMPLETED);
  });

  it.each(cases.filter((c) => c.title.startsWith("container_run")))(
    "$title gets past validation (refused only for want of a container runtime)",
    async ({ request }) => {
      const error = await refusal(client.submitOperation(request("")));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toContain("no container runtime");
    },
  );
});

it("the server's log holds no NUL and none of the values that carried one", () => {
  const logged = JSON.stringify(server.logs);
  expect(logged).not.toContain("\\u0000");
  expect(logged).not.toContain("\0");
  expect(logged).not.toContain(CANARY);
});
