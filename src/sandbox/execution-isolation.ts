// Which isolation a server or a worker runs executions under, decided once at start: a
// sandbox when one can be made; none when the operator said `--unsafe-no-sandbox`; otherwise
// executions are refused (SANDBOX_UNAVAILABLE) rather than run with the server's authority.
import { realpathSync } from "node:fs";
import { join, resolve } from "node:path";
import { SandboxMode } from "../gen/agentmachine/v1/contract_service_pb.js";
import { nodePrefix, probeSandbox, Sandboxes } from "./sandbox.js";

export interface SandboxSettings {
  /** Run executions unconfined, as the server's user: development only, shown everywhere. */
  unsafeNoSandbox: boolean;
  /** Cap on the processes and threads of one sandbox. */
  maxProcesses: number;
  /** Size of a sandbox's private /tmp. */
  tmpBytes: number;
  /** bubblewrap's path, when it is not on the system's PATH. */
  bwrapPath?: string;
}

export interface ExecutionIsolation {
  mode: SandboxMode;
  /** In words, for GetContract, the log and refusals. */
  detail: string;
  /** Set when mode is ENFORCED. */
  sandboxes?: Sandboxes;
}

export const UNSAFE_DETAIL = "--unsafe-no-sandbox: executions run unconfined as the server's user, with its access to the data dir, its keys and the network";

/** The project's install (this file is src/sandbox/ in it), bound read-only so `amctl` works inside. */
const installDir = resolve(import.meta.dirname, "..", "..");

/**
 * Where the install's packages really are: a `node_modules` that is a symbolic link (a git
 * worktree sharing one install, a linked store) points outside `installDir`, so its target is
 * bound too, or nothing inside could load a package.
 */
function packagesDir(): string | undefined {
  try {
    const real = realpathSync(join(installDir, "node_modules"));
    return real.startsWith(`${installDir}/`) ? undefined : real;
  } catch {
    return undefined;
  }
}

export function executionIsolation(settings: SandboxSettings): ExecutionIsolation {
  if (settings.unsafeNoSandbox) return { mode: SandboxMode.DISABLED_UNSAFE, detail: UNSAFE_DETAIL };
  const probe = probeSandbox(settings.bwrapPath);
  if (!probe.available) return { mode: SandboxMode.UNAVAILABLE, detail: probe.reason };
  const sandboxes = new Sandboxes(probe.tools, {
    readOnly: [...new Set([installDir, packagesDir() ?? installDir, nodePrefix()])].filter((dir) => dir !== "/" && dir !== "/usr" && !dir.startsWith("/usr/")),
    maxProcesses: settings.maxProcesses,
    tmpBytes: settings.tmpBytes,
  });
  return { mode: SandboxMode.ENFORCED, detail: probe.detail, sandboxes };
}
