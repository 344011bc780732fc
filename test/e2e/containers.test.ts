// agent_machine.container.run end to end over real sockets, with a stand-in container runtime
// (test/fixtures/fake-container-runtime.mjs) that records every command line it is given: the
// exact `run` invocation, network only where the networkProfile gate allowed it, exit codes,
// cancel and the wall clock stopping the container by name, and the recorded artifact. Then the
// same with a real runtime (podman with runc, installed and configured by
// test/helpers/podman.ts) and a real image: who the container runs as, its network, what it may
// write, and a cancel.
import { chmodSync, copyFileSync, existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { create, toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDimension, type BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { ArtifactSchema } from "../../src/gen/agentmachine/v1/artifact_pb.js";
import { StopReason, type ContainerRunSpecSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, PolicyGate, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig } from "../../src/config/config.js";
import { amctl } from "../helpers/cli.js";
import { createProfile, operationsClient, requestId, run, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { bundleSource, policyAdmin, policyClient } from "../helpers/policy.js";
import { setUpPodman, type Podman } from "../helpers/podman.js";
import { repoRoot, startChildServer, startTestServer, tempDir, type ChildServer, type TestServer } from "../helpers/server.js";

const RUNTIME = join(repoRoot, "test/fixtures/fake-container-runtime.mjs");
const DIGEST = `sha256:${"c".repeat(64)}`;

let server: TestServer;
let client: OperationsClient;
let profile: string;
/** Where the stand-in records its calls (calls.jsonl) and keeps its running containers. */
const runtimeDir = tempDir("amctl-fake-runtime-");

/** The stand-in's image for a behaviour: prints, exits, hangs or starts-late. */
const image = (mode: string): string => `registry.test/${mode}@${DIGEST}`;

function container(
  target: string,
  spec: MessageInitShape<typeof ContainerRunSpecSchema>,
  requestedBudget?: MessageInitShape<typeof BudgetSchema>,
): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, {
    requestId: requestId("container"),
    profile: target,
    spec: { kind: { case: "containerRun", value: spec } },
    requestedBudget,
  });
}

const idOf = (name: string): string => name.replace("operations/", "");
const containerName = (name: string): string => `amctl-${idOf(name).toLowerCase()}`;
const workspaceOf = (name: string): string => join(server.dataDir, "workspaces", idOf(name));

/** Every command line the stand-in was given. */
function allCalls(): string[][] {
  const file = join(runtimeDir, "calls.jsonl");
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => (JSON.parse(line) as { argv: string[] }).argv);
}

/** The command lines that concern the container of operation `name`. */
const callsFor = (name: string): string[][] => allCalls().filter((argv) => argv.includes(containerName(name)));

/** The isolation flags every run gets, between `--name` and the limits. */
const ISOLATION = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--user", "65534:65534"];

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  return error ?? expect.fail("expected a refusal, but the call succeeded");
}

/** Submits, then waits until the stand-in runs the container. */
async function started(request: SubmitOperationRequest): Promise<string> {
  const { operation } = await client.submitOperation(request);
  const name = operation!.name;
  await expect.poll(() => callsFor(name).length, { timeout: 10_000 }).toBeGreaterThan(0);
  return name;
}

beforeAll(async () => {
  // The stand-in finds its directory through the server's environment allowlist, as a real
  // runtime finds its daemon through the variables it reads.
  process.env.AMCTL_FAKE_RUNTIME_DIR = runtimeDir;
  server = await startTestServer({
    containerRuntime: RUNTIME,
    execution: {
      ...defaultConfig.execution,
      envAllowlist: ["PATH", "AMCTL_FAKE_RUNTIME_DIR"],
      outputLimitBytes: 4096,
      defaultWallClockSeconds: 60,
      killGraceMs: 500,
    },
  });
  client = operationsClient(server.url);
  profile = await createProfile(client, "dev");
});
afterAll(async () => {
  await server?.close();
  delete process.env.AMCTL_FAKE_RUNTIME_DIR;
});

describe("the run command line", () => {
  it("isolates the container, limits it by its budget, passes its env, and records what ran with env values redacted", async () => {
    const request = container(
      profile,
      { image: image("prints"), argv: ["make", "--jobs", "2"], env: { TOKEN: "s3cret-value", LANG: "C" } },
      { sandboxMemoryBytes: 256n * 1024n ** 2n, cpuGpuComputeSeconds: 30n, wallClockSeconds: 60n },
    );
    const { operation } = await run(client, request);
    const name = containerName(operation.name);
    const workspace = workspaceOf(operation.name);
    const limits = ["--memory", String(256n * 1024n ** 2n), "--cpus", "0.50", "--pids-limit", "512"];
    const mount = ["--mount", `type=bind,source=${workspace},target=/workspace`, "--workdir", "/workspace"];
    const expected = [
      "run",
      "--rm",
      "--name",
      name,
      "--network=none",
      ...ISOLATION,
      ...limits,
      ...mount,
      "--env",
      "LANG=C",
      "--env",
      "TOKEN=s3cret-value",
      image("prints"),
      "make",
      "--jobs",
      "2",
    ];
    expect(callsFor(operation.name)).toEqual([expected]);

    expect(operation.state).toBe(TaskState.COMPLETED);
    const stdout = 'container argv: ["make","--jobs","2"]\n';
    expect(readFileSync(join(workspace, "stdout.1.log"), "utf8")).toBe(stdout);
    expect(readFileSync(join(workspace, "stderr.1.log"), "utf8")).toBe("runtime: image already present\n");
    expect(operation.artifact?.kind).toMatchObject({
      case: "containerExecutionRecord",
      value: {
        operationType: OperationType.CONTAINER_RUN,
        imageDigest: image("prints"),
        exitCode: 0,
        argv: [RUNTIME, ...expected.map((arg) => arg.replace(/^(LANG|TOKEN)=.*$/, "$1=[redacted]"))],
        stdoutBytes: BigInt(stdout.length),
        stderrBytes: BigInt("runtime: image already present\n".length),
        outputTruncated: false,
      },
    });
    const record = operation.artifact!.kind.value as { usage?: { wallClockSeconds: bigint } };
    expect(record.usage?.wallClockSeconds).toBeGreaterThanOrEqual(1n);
    expect(operation.usage?.wallClockSeconds).toBe(record.usage?.wallClockSeconds);
    // The value went to the runtime only: neither the record of the run nor the server's log holds it.
    expect(toJsonString(ArtifactSchema, operation.artifact!)).not.toContain("s3cret-value");
    expect(JSON.stringify(server.logs)).not.toContain("s3cret-value");
  });

  it("gives network egress to a container that asked for it when the networkProfile gate allowed it, with the default budget's limits", async () => {
    const { operation } = await run(client, container(profile, { image: image("prints"), network: true }));
    expect(operation.policyDecisions.map((d) => [d.gate, d.allowed])).toEqual([
      [PolicyGate.CONTAINER_EXECUTION, true],
      [PolicyGate.NETWORK_PROFILE, true],
    ]);
    const { sandboxMemoryBytes, cpuGpuComputeSeconds, wallClockSeconds } = defaultConfig.defaultBudget;
    expect([cpuGpuComputeSeconds, wallClockSeconds]).toEqual([3600n, 5400n]); // 0.66 CPUs, floored
    const limits = ["--memory", String(sandboxMemoryBytes), "--cpus", "0.66", "--pids-limit", "512"];
    const mount = ["--mount", `type=bind,source=${workspaceOf(operation.name)},target=/workspace`, "--workdir", "/workspace"];
    expect(callsFor(operation.name)).toEqual([["run", "--rm", "--name", containerName(operation.name), ...ISOLATION, ...limits, ...mount, image("prints")]]);
    expect(operation.state).toBe(TaskState.COMPLETED);
  });

  it("refuses a container with network where the bundle's networkProfile gate denies it, running nothing; without network it runs", async () => {
    const corp = await createProfile(client, "corp", ProfileType.CORPORATE_FIREWALL);
    const source = bundleSource("corporate_firewall", [{ id: "corp.containers", gate: "containerExecution", effect: "allow", when: "true" }]);
    await policyClient(server.url, await policyAdmin(server.dataDir, [ProfileType.CORPORATE_FIREWALL])).applyPolicyBundle({
      profileType: ProfileType.CORPORATE_FIREWALL,
      source,
    });
    const before = allCalls().length;
    const error = await refusal(client.submitOperation(container(corp, { image: image("prints"), network: true })));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "POLICY_DENIED", metadata: { gate: "networkProfile", rule: "no-matching-allow" } });
    expect(allCalls()).toHaveLength(before);
    const { operation } = await run(client, container(corp, { image: image("prints") }));
    expect(operation.state).toBe(TaskState.COMPLETED);
    expect(callsFor(operation.name)[0]).toContain("--network=none");
  });

  it("refuses network to an airgapped profile by its profile rule, whatever its bundle allows", async () => {
    const airgapped = await createProfile(client, "offline", ProfileType.AIRGAPPED_LOCAL_ONLY);
    const error = await refusal(client.submitOperation(container(airgapped, { image: image("prints"), network: true })));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: "PROFILE_SEPARATION", metadata: { rule: "airgapped-no-network" } });
  });

  it("refuses an image named by tag with InvalidArgument naming spec.container_run.image", async () => {
    const error = await refusal(client.submitOperation(container(profile, { image: "registry.test/prints:latest" })));
    expect(error.code).toBe(Code.InvalidArgument);
    const violation = error.findDetails(ViolationsSchema)[0]?.violations[0];
    expect(violation?.field?.elements.map((e) => e.fieldName)).toEqual(["spec", "container_run", "image"]);
  });

  it("is allowed by a dry run, as admission would decide it on a server with a runtime", async () => {
    const answer = await policyClient(server.url).evaluatePolicy({ subject: { case: "operation", value: container(profile, { image: image("prints") }) } });
    expect([answer.allowed, answer.denial]).toEqual([true, undefined]);
  });
});

describe("how a run ends", () => {
  it("fails with the container's exit code, recorded on the artifact", async () => {
    const { operation } = await run(client, container(profile, { image: image("exits"), argv: ["3"] }));
    expect(operation).toMatchObject({ state: TaskState.FAILED, stopCause: { reason: StopReason.EXIT_CODE, message: "container exited with code 3" } });
    expect(operation.artifact?.kind).toMatchObject({ case: "containerExecutionRecord", value: { exitCode: 3, imageDigest: image("exits") } });
  });

  it("stops the container by name on cancel, waits for the run to end, and records cancelled", async () => {
    const name = await started(container(profile, { image: image("hangs") }));
    await client.cancelOperation({ name, reason: "no longer needed" });
    const { operation, events } = await waitForEnd(client, name);
    expect(operation.state).toBe(TaskState.CANCELLED);
    expect(events.at(-1)?.attributes).toMatchObject({ case: "cancel", value: { cause: { reason: StopReason.CANCELLED, message: "no longer needed" } } });
    const [first, ...then] = callsFor(name);
    expect(first?.[0]).toBe("run");
    expect(then).toEqual([["stop", "-t", "1", containerName(name)]]);
    // The run exited because stop sent its SIGTERM (143), not because the CLI was killed.
    expect(operation.artifact?.kind).toMatchObject({ case: "containerExecutionRecord", value: { exitCode: 143 } });
  });

  it("kills a container that was created after stop looked for it", async () => {
    const name = await started(container(profile, { image: image("starts-late") }));
    await client.cancelOperation({ name });
    const { operation } = await waitForEnd(client, name);
    expect(operation.state).toBe(TaskState.CANCELLED);
    expect(callsFor(name).map((argv) => argv[0])).toEqual(["run", "stop", "kill"]);
    expect(operation.artifact?.kind).toMatchObject({ value: { exitCode: 137 } });
  });

  it("stops a container that outlives its wall clock and fails it as budget_exhausted WALL_CLOCK_SECONDS", async () => {
    const { operation } = await run(client, container(profile, { image: image("hangs") }, { wallClockSeconds: 1n }));
    expect(operation).toMatchObject({
      state: TaskState.FAILED,
      stopCause: { reason: StopReason.BUDGET_EXHAUSTED, dimension: BudgetDimension.WALL_CLOCK_SECONDS },
    });
    expect(callsFor(operation.name).map((argv) => argv[0])).toEqual(["run", "stop"]);
    expect(operation.usage?.wallClockSeconds).toBeGreaterThanOrEqual(1n);
  });
});

describe("configuration", () => {
  it("refuses container.run at admission naming the missing runtime on a server without one", async () => {
    const bare = await startTestServer();
    try {
      const bareClient = operationsClient(bare.url);
      const dev = await createProfile(bareClient, "dev");
      const error = await refusal(bareClient.submitOperation(container(dev, { image: image("prints") })));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.findDetails(ErrorInfoSchema)[0]?.reason).toBe("NO_EXECUTOR");
      expect(error.rawMessage).toContain("no container runtime is configured (amctl serve --container-runtime)");
    } finally {
      await bare.close();
    }
  });

  it("does not start with a runtime that is not on PATH", async () => {
    await expect(startTestServer({ containerRuntime: "no-such-container-runtime" })).rejects.toThrow(
      "--container-runtime no-such-container-runtime: no-such-container-runtime was not found on PATH",
    );
  });

  it("fails a run without retrying when the runtime is gone since the server started", async () => {
    const gone = join(tempDir(), "runtime");
    copyFileSync(RUNTIME, gone);
    chmodSync(gone, 0o755);
    const vanishing = await startTestServer({ containerRuntime: gone, defaultRetry: { ...defaultConfig.defaultRetry, maxAttempts: 3 } });
    try {
      rmSync(gone);
      const vanishingClient = operationsClient(vanishing.url);
      const dev = await createProfile(vanishingClient, "dev");
      const { operation } = await run(vanishingClient, container(dev, { image: image("prints") }));
      expect(operation).toMatchObject({
        state: TaskState.FAILED,
        attempt: 1,
        stopCause: { reason: StopReason.SPAWN_FAILED, message: `cannot start ${gone}: ENOENT` },
      });
    } finally {
      await vanishing.close();
    }
  });

  it("amctl serve --container-runtime runs container.run with that runtime", async () => {
    const child = await startChildServer(["--container-runtime", RUNTIME]);
    try {
      const childClient = operationsClient(child.url);
      const dev = await createProfile(childClient, "dev");
      const { operation } = await run(childClient, container(dev, { image: image("prints"), argv: ["from-serve"] }));
      expect(operation.state).toBe(TaskState.COMPLETED);
      expect(readFileSync(join(child.dataDir, "workspaces", idOf(operation.name), "stdout.1.log"), "utf8")).toBe('container argv: ["from-serve"]\n');
    } finally {
      child.child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
    }
  });
});

describe("a real container runtime: podman with runc (test/helpers/podman.ts)", () => {
  let setUp: Promise<{ podman: Podman; server: ChildServer; client: OperationsClient; dev: string }> | undefined;
  beforeAll(async () => {
    setUp = (async () => {
      const podman = await setUpPodman();
      // `amctl serve` passes CONTAINERS_CONF and CONTAINERS_STORAGE_CONF on to podman; the child
      // inherits them from this process's environment, which keeps them only while it starts.
      const saved = { ...process.env };
      Object.assign(process.env, podman.env);
      let server: ChildServer;
      try {
        server = await startChildServer(["--container-runtime", podman.runtime]);
      } finally {
        for (const key of Object.keys(podman.env)) {
          if (saved[key] === undefined) delete process.env[key];
          else process.env[key] = saved[key];
        }
      }
      const realClient = operationsClient(server.url);
      return { podman, server, client: realClient, dev: await createProfile(realClient, "dev") };
    })();
    // Installing podman may take minutes on a fresh machine. A failed set-up is not the hook's
    // failure but every test's (a failing hook would leave the tests reported as skipped).
    await setUp.catch(() => undefined);
  }, 600_000);
  afterAll(async () => {
    const started = await setUp?.catch(() => undefined);
    if (started) {
      started.server.child.kill("SIGTERM");
      expect(await started.server.exited).toBe(0);
    }
  });

  /** The podman, the server that runs it, a client of that server and a profile to run containers in. */
  const realRuntime = () => setUp ?? Promise.reject(new Error("podman was never set up"));

  /**
   * A TCP listener on every address of this host, and one of them that is not loopback: a
   * container with network reaches it through the runtime's NAT; one without does not.
   */
  async function hostListener(): Promise<{ host: string; port: number; connections: () => number; close: () => Promise<void> }> {
    const host = Object.values(networkInterfaces())
      .flat()
      .find((address) => address?.family === "IPv4" && !address.internal)?.address;
    if (host === undefined) throw new Error("this host has no IPv4 address but loopback for a container to try to reach");
    let connections = 0;
    const listener = createServer((socket) => {
      connections += 1;
      socket.end();
    });
    await new Promise<void>((resolveListen) => listener.listen(0, "0.0.0.0", resolveListen));
    const { port } = listener.address() as AddressInfo;
    return { host, port, connections: () => connections, close: () => new Promise((resolveClose) => listener.close(() => resolveClose())) };
  }

  it("runs a tiny image pinned by digest as nobody, without network, writing only to its workspace", { timeout: 120_000 }, async () => {
    const { podman, server: real, client: realClient, dev } = await realRuntime();
    const listener = await hostListener();
    try {
      const script = [
        "id -u; id -g; ls /sys/class/net",
        `nc -w 2 ${listener.host} ${listener.port} </dev/null 2>/dev/null && echo connected || echo no-network`,
        "echo written > /workspace/out",
        // /scratch is writable by everyone in the image, so only the read-only root stops this.
        "touch /scratch/file /elsewhere 2>&1",
        "echo done >&2",
      ].join("; ");
      const { operation } = await run(realClient, container(dev, { image: podman.image, argv: ["sh", "-c", script] }));
      expect(operation).toMatchObject({
        state: TaskState.COMPLETED,
        artifact: { kind: { case: "containerExecutionRecord", value: { exitCode: 0, imageDigest: podman.image } } },
      });
      const record = operation.artifact!.kind.value as { argv: string[] };
      expect(record.argv.slice(0, 2)).toEqual([expect.stringMatching(/\/podman$/), "run"]);
      expect(record.argv).toContain("--network=none");

      const workspace = join(real.dataDir, "workspaces", idOf(operation.name));
      const stdout = ["65534", "65534", "lo", "no-network", "touch: /scratch/file: Read-only file system", "touch: /elsewhere: Read-only file system", ""].join(
        "\n",
      );
      expect(readFileSync(join(workspace, "stdout.1.log"), "utf8")).toBe(stdout);
      expect(readFileSync(join(workspace, "stderr.1.log"), "utf8")).toBe("done\n");
      // The server kept the same output, stdout and stderr apart (OutputService, amctl logs).
      const logsEnv = { AMCTL_SERVER: real.url, AMCTL_TOKEN: real.token };
      expect(await amctl(["logs", operation.name], logsEnv)).toMatchObject({ code: 0, stdout });
      expect(await amctl(["logs", "--stderr", operation.name], logsEnv)).toMatchObject({ code: 0, stdout: "done\n" });
      expect(listener.connections()).toBe(0);
      // Written by the container's user into the workspace, the one directory it may write to,
      // which the server (root) gave to that user alone.
      expect(readFileSync(join(workspace, "out"), "utf8")).toBe("written\n");
      expect(statSync(join(workspace, "out")).uid).toBe(65534);
      expect(statSync(workspace)).toMatchObject({ uid: 65534, gid: 65534 });
      expect(statSync(workspace).mode & 0o777).toBe(0o700);
      expect(podman.podman(["container", "exists", containerName(operation.name)]).status).toBe(1);
    } finally {
      await listener.close();
    }
  });

  it("gives the container network when it asked and the networkProfile gate allowed it: the same connection goes through", { timeout: 120_000 }, async () => {
    const { podman, client: realClient, dev } = await realRuntime();
    const listener = await hostListener();
    try {
      const script = `nc -w 5 ${listener.host} ${listener.port} </dev/null && echo connected || echo no-network`;
      const { operation } = await run(realClient, container(dev, { image: podman.image, argv: ["sh", "-c", script], network: true }));
      expect(operation.policyDecisions.map((d) => [d.gate, d.allowed])).toEqual([
        [PolicyGate.CONTAINER_EXECUTION, true],
        [PolicyGate.NETWORK_PROFILE, true],
      ]);
      expect(operation.state).toBe(TaskState.COMPLETED);
      expect(operation.artifact?.kind.value).not.toHaveProperty("argv", expect.arrayContaining(["--network=none"]));
      expect(listener.connections()).toBe(1);
    } finally {
      await listener.close();
    }
  });

  it("stops a sleeping container on cancel and removes it", { timeout: 120_000 }, async () => {
    const { podman, client: realClient, dev } = await realRuntime();
    const { operation: submitted } = await realClient.submitOperation(container(dev, { image: podman.image, argv: ["sleep", "600"] }));
    const name = submitted!.name;
    const running = (): string => podman.podman(["container", "inspect", "--format", "{{.State.Status}}", containerName(name)]).stdout.trim();
    await expect.poll(running, { timeout: 30_000, interval: 100 }).toBe("running");
    await realClient.cancelOperation({ name, reason: "no longer needed" });
    const { operation } = await waitForEnd(realClient, name, 30_000);
    expect(operation.state).toBe(TaskState.CANCELLED);
    // sleep is the container's pid 1, which ignores SIGTERM: `stop` kills it after the grace.
    expect(operation.artifact?.kind).toMatchObject({ case: "containerExecutionRecord", value: { exitCode: 137 } });
    await expect.poll(() => podman.podman(["container", "exists", containerName(name)]).status, { timeout: 10_000 }).toBe(1);
  });
});
