// The container command line as a pure function of the operation: isolation flags, limits
// derived from the budget, network only with an allowing networkProfile decision, and env
// values kept out of what is recorded.
import { PolicyGate } from "../../src/gen/agentmachine/v1/types_pb.js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { OperationSchema, type PolicyDecisionSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { containerInvocation, networkEgressAllowed } from "../../src/executors/container-invocation.js";

const IMAGE = `registry.example/tool@sha256:${"b".repeat(64)}`;
const GiB = 1024n ** 3n;

function operation(
  network: boolean,
  decisions: MessageInitShape<typeof PolicyDecisionSchema>[],
  budget = { sandboxMemoryBytes: 2n * GiB, cpuGpuComputeSeconds: 90n, wallClockSeconds: 60n },
) {
  return create(OperationSchema, {
    name: "operations/01JABCDEF",
    spec: { kind: { case: "containerRun", value: { image: IMAGE, argv: ["make", "-j4"], env: { ZED: "last", API_KEY: "s3cret" }, network } } },
    requestedBudget: budget,
    policyDecisions: decisions,
  });
}

const containerGate = { gate: PolicyGate.CONTAINER_EXECUTION, rule: "r", allowed: true };
const networkGate = { gate: PolicyGate.NETWORK_PROFILE, rule: "n", allowed: true };

describe("containerInvocation", () => {
  it("isolates the container: no network, read-only, no capabilities, nobody, budget limits, the workspace as the only mount", () => {
    const invocation = containerInvocation({
      operation: operation(false, [containerGate]),
      workspace: "/data/workspaces/01JABCDEF",
      wallClockSeconds: 60,
      hostCpus: 8,
    });
    expect(invocation.name).toBe("amctl-01jabcdef");
    expect(invocation.args).toEqual([
      "run",
      "--rm",
      "--name",
      "amctl-01jabcdef",
      "--network=none",
      "--read-only",
      "--cap-drop=ALL",
      "--security-opt=no-new-privileges",
      "--user",
      "65534:65534",
      "--memory",
      String(2n * GiB),
      "--cpus",
      "1.50",
      "--pids-limit",
      "512",
      "--mount",
      "type=bind,source=/data/workspaces/01JABCDEF,target=/workspace",
      "--workdir",
      "/workspace",
      "--env",
      "API_KEY=s3cret",
      "--env",
      "ZED=last",
      IMAGE,
      "make",
      "-j4",
    ]);
  });

  it("binds each mount after the workspace, readonly unless it is a read-write workspace mount", () => {
    const mounts = [
      { source: "/src/app", target: "/project", readWrite: false },
      { source: "/data/workspaces/01JABCDEF/out", target: "/out", readWrite: true },
    ];
    const { args } = containerInvocation({
      operation: operation(false, []),
      workspace: "/data/workspaces/01JABCDEF",
      wallClockSeconds: 60,
      hostCpus: 8,
      mounts,
    });
    expect(args.flatMap((arg, index) => (args[index - 1] === "--mount" ? [arg] : []))).toEqual([
      "type=bind,source=/data/workspaces/01JABCDEF,target=/workspace",
      "type=bind,source=/src/app,target=/project,readonly",
      "type=bind,source=/data/workspaces/01JABCDEF/out,target=/out",
    ]);
  });

  it("records the same command line with every environment value redacted", () => {
    const { args, recordedArgs } = containerInvocation({ operation: operation(false, []), workspace: "/w", wallClockSeconds: 60, hostCpus: 8 });
    expect(recordedArgs).toEqual(args.map((arg) => ({ "API_KEY=s3cret": "API_KEY=[redacted]", "ZED=last": "ZED=[redacted]" })[arg] ?? arg));
    expect(recordedArgs.join(" ")).not.toContain("s3cret");
  });

  it.each([
    ["compute / wall clock, floored to hundredths", 3600n, 5400, "0.66"],
    ["at least 0.01", 1n, 5400, "0.01"],
    ["no more than the host has", 3600n, 60, "8.00"],
  ])("gives --cpus as %s", (_what, cpuGpuComputeSeconds, wallClockSeconds, cpus) => {
    const op = operation(false, [], { sandboxMemoryBytes: GiB, cpuGpuComputeSeconds, wallClockSeconds: BigInt(wallClockSeconds) });
    const { args } = containerInvocation({ operation: op, workspace: "/w", wallClockSeconds, hostCpus: 8 });
    expect(args[args.indexOf("--cpus") + 1]).toBe(cpus);
  });

  it("drops --network=none only when the container asked for network and the networkProfile gate allowed it", () => {
    const networkFlag = (op: ReturnType<typeof operation>) =>
      containerInvocation({ operation: op, workspace: "/w", wallClockSeconds: 60, hostCpus: 8 }).args.includes("--network=none");
    expect(networkFlag(operation(true, [containerGate, networkGate]))).toBe(false);
    // Asked for, but no decision allowed it (as for an operation admitted without the gate): none.
    expect(networkFlag(operation(true, [containerGate]))).toBe(true);
    expect(networkFlag(operation(true, [containerGate, { ...networkGate, allowed: false }]))).toBe(true);
    // Allowed, but not asked for: none either.
    expect(networkFlag(operation(false, [containerGate, networkGate]))).toBe(true);
    expect(networkEgressAllowed(operation(true, [networkGate]))).toBe(true);
  });

  it("refuses what would weaken the isolation: no memory budget (0 is unlimited to the runtimes), a workspace path --mount would misread", () => {
    const noMemory = operation(false, [], { sandboxMemoryBytes: 0n, cpuGpuComputeSeconds: 1n, wallClockSeconds: 1n });
    expect(() => containerInvocation({ operation: noMemory, workspace: "/w", wallClockSeconds: 1, hostCpus: 1 })).toThrow("no sandboxMemoryBytes budget");
    expect(() => containerInvocation({ operation: operation(false, []), workspace: "/w,target=/etc", wallClockSeconds: 1, hostCpus: 1 })).toThrow("comma");
  });
});
