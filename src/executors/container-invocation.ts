// The command line of `podman run` / `docker run` for one agent_machine.container.run: what
// isolates the container is decided here, in one pure function, so it can be read and tested
// without a runtime. Both runtimes take these flags alike.
//
// - No network unless the operation's networkProfile gate allowed egress (then the runtime's
//   default network).
// - A read-only root, every capability dropped, no privilege gain through setuid binaries, and
//   an unprivileged user (nobody), so a compromised image has nothing to escalate with.
// - The operation's workspace is the only host path the container sees read-write (and its
//   working directory), besides the directories of it the operation mounts elsewhere; the
//   operation's other mounts are host paths its delegation may mount, bound `readonly`.
// - Limits from the operation's budget (admission filled in the server's defaults):
//   `--memory` is sandboxMemoryBytes; `--cpus` is cpuGpuComputeSeconds / wallClockSeconds, the
//   rate at which a run that lasts its whole wall clock spends exactly its compute budget, so
//   without measuring CPU time it can never spend more (floored to hundredths, at least 0.01,
//   at most the host's CPUs, which the runtimes refuse to exceed); `--pids-limit` is fixed.
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { operationIdOf } from "../model/resource-names.js";
import { PolicyGate } from "../gen/agentmachine/v1/types_pb.js";

/** Processes a container may hold at once: room for build tools' worker pools, none for a fork bomb. */
const PIDS_LIMIT = 512;

/** Where the workspace appears inside the container. */
export const CONTAINER_WORKSPACE = "/workspace";

/** The user and group the container runs as: nobody, so no file of the image belongs to it. */
export const CONTAINER_UID = 65534;
export const CONTAINER_GID = 65534;
const UNPRIVILEGED_USER = `${CONTAINER_UID}:${CONTAINER_GID}`;

export interface InvocationInput {
  /** A container.run operation, as admitted: its spec, requested budget and policy decisions. */
  operation: Operation;
  /** The operation's workspace on the host, an absolute path. */
  workspace: string;
  /** The run's wall clock: the budget's, or the server's default when the budget sets none. */
  wallClockSeconds: number;
  /** CPUs of the host: the most `--cpus` may say. */
  hostCpus: number;
  /** The operation's mounts, their sources opened and checked (src/sandbox/mount-sources.ts); none when unset. */
  mounts?: readonly { source: string; target: string; readWrite: boolean }[];
}

export interface Invocation {
  /** The container's name, `amctl-<operation id>` lowercased, by which it is stopped. */
  name: string;
  /** Arguments of the runtime binary. */
  args: string[];
  /** The same with each environment value replaced by `[redacted]`: what may be recorded. */
  recordedArgs: string[];
}

/**
 * Whether a container or an execution gets network egress: only if it asked for it and
 * admission recorded an allowing networkProfile decision. The spec alone never decides: the
 * gate (and the profile rule that forbids egress to airgapped profiles) ran on it at admission.
 */
export function networkEgressAllowed(operation: Operation): boolean {
  const spec = operation.spec?.kind;
  const asked = (spec?.case === "containerRun" || spec?.case === "executionStart") && spec.value.network;
  return asked && operation.policyDecisions.some((d) => d.gate === PolicyGate.NETWORK_PROFILE && d.allowed);
}

/** `compute / wall` CPUs in hundredths, as `--cpus` takes them (see the header). */
function cpus(computeSeconds: bigint, wallClockSeconds: number, hostCpus: number): string {
  const hundredths = (computeSeconds * 100n) / BigInt(Math.max(1, wallClockSeconds));
  const bounded = hundredths < 1n ? 1n : hundredths > BigInt(hostCpus * 100) ? BigInt(hostCpus * 100) : hundredths;
  return `${bounded / 100n}.${String(bounded % 100n).padStart(2, "0")}`;
}

/** The container's name, derived from the operation so that a cancel, or a restarted server, can stop it. */
export function containerName(operation: Pick<Operation, "name">): string {
  return `amctl-${operationIdOf(operation.name).toLowerCase()}`;
}

export function containerInvocation({ operation, workspace, wallClockSeconds, hostCpus, mounts = [] }: InvocationInput): Invocation {
  const spec = operation.spec?.kind;
  if (spec?.case !== "containerRun") throw new Error(`${operation.name} is not a container run`);
  const memory = operation.requestedBudget?.sandboxMemoryBytes ?? 0n;
  // Both runtimes read a memory limit of 0 as "unlimited": never let a missing budget mean that.
  if (memory === 0n) throw new Error(`${operation.name} has no sandboxMemoryBytes budget to limit its container with`);
  // --mount splits its value at commas; a workspace path holding one would mount something else.
  if (workspace.includes(",")) throw new Error(`cannot mount a workspace whose path holds a comma: ${workspace}`);
  const name = containerName(operation);
  const before = [
    "run",
    "--rm",
    "--name",
    name,
    ...(networkEgressAllowed(operation) ? [] : ["--network=none"]),
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--user",
    UNPRIVILEGED_USER,
    "--memory",
    String(memory),
    "--cpus",
    cpus(operation.requestedBudget?.cpuGpuComputeSeconds ?? 0n, wallClockSeconds, hostCpus),
    "--pids-limit",
    String(PIDS_LIMIT),
    "--mount",
    `type=bind,source=${workspace},target=${CONTAINER_WORKSPACE}`,
    // Admission refused paths holding a comma, which would split these values.
    ...mounts.flatMap(({ source, target, readWrite }) => ["--mount", `type=bind,source=${source},target=${target}${readWrite ? "" : ",readonly"}`]),
    "--workdir",
    CONTAINER_WORKSPACE,
  ];
  // Sorted, so the same spec always gives the same command line whatever the map's order.
  const env = Object.entries(spec.value.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const after = [spec.value.image, ...spec.value.argv];
  return {
    name,
    args: [...before, ...env.flatMap(([key, value]) => ["--env", `${key}=${value}`]), ...after],
    recordedArgs: [...before, ...env.flatMap(([key]) => ["--env", `${key}=[redacted]`]), ...after],
  };
}
