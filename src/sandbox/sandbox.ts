// The one place an execution's confinement is built. Both the server's local executor and a
// remote worker's run every execution through `Sandboxes.prepare`, which gives the command
// line to spawn and what to clean up after. What the sandbox sees is bubblewrap-args.ts; how
// it reaches the plane is launcher.ts and plane-sockets.ts; kernel limits are
// sandbox-cgroup.ts. docs/sandbox.md is the threat model.
//
// Why bubblewrap driven here rather than @anthropic-ai/sandbox-runtime (0.0.50, the last
// release that runs on Node 20): that library configures one process-wide sandbox (a
// singleton manager with one filesystem and network policy, one shared proxy whose
// allow/deny callback is not told which sandbox asks), binds the host's whole root read-only
// and hides chosen paths, and keeps the caller's uid. The plane needs the opposite on each
// point: one sandbox per attempt with its own credential and policy decisions, an empty root
// with only what is listed, an unprivileged uid, and every connection attributed to its
// operation so it can be decided, charged and audited.
//
// Process chain: sh (cgroups, rlimits) → [setpriv to the sandbox uid] → bwrap → launcher (perl)
// → the program. Each execs the next, so the spawned pid is bwrap's. Outside the
// sandbox only trusted binaries run, with a fixed environment.
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { resolveExecutable } from "../executors/resolve-executable.js";
import { bubblewrapOptions } from "./bubblewrap-args.js";
import { encodeEnvironment, launcherArgv, type Bridge } from "./launcher.js";
import { PlaneSockets, type PlaneAddress } from "./plane-sockets.js";
import { createSandboxCgroup, sweepLeftoverCgroups, type SandboxCgroup } from "./sandbox-cgroup.js";

/** Where the sandbox's helper programs are looked up: system directories only. */
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** The file descriptor bwrap reads its arguments from. */
export const SANDBOX_ARGS_FD = 4;
/** The sandbox's uid and gid: `nobody`, never the server's and never root. */
export const SANDBOX_ID = 65534;
const EGRESS_PORT = 3128;

const INSTALL_HINT = "install bubblewrap and socat (Debian/Ubuntu: apt-get install -y bubblewrap socat; perl comes with the system), or start the server with --unsafe-no-sandbox for development only";

export interface SandboxTools {
  bwrap: string;
  socat: string;
  /** Runs the launcher (launcher.ts). */
  perl: string;
  /** Needed when the server runs as root (to leave root before bwrap). */
  setpriv?: string;
}

export type SandboxProbe = { available: true; tools: SandboxTools; detail: string } | { available: false; reason: string };

const isRoot = process.getuid?.() === 0;

function find(program: string): string | undefined {
  try {
    return resolveExecutable(program, SYSTEM_PATH);
  } catch {
    return undefined;
  }
}

/** Whether a sandbox can be made here: the tools exist and a trial sandbox runs `true`. */
export function probeSandbox(bwrapPath?: string): SandboxProbe {
  const bwrap = bwrapPath === undefined ? find("bwrap") : find(bwrapPath);
  const socat = find("socat");
  const perl = find("perl");
  const setpriv = find("setpriv");
  const missing = [bwrap ? undefined : "bwrap (bubblewrap)", socat ? undefined : "socat", perl ? undefined : "perl", isRoot && !setpriv ? "setpriv (util-linux)" : undefined].filter(Boolean);
  if (missing.length > 0 || bwrap === undefined || socat === undefined || perl === undefined) return { available: false, reason: `no sandbox: ${missing.join(", ")} not found; ${INSTALL_HINT}` };
  const tools: SandboxTools = { bwrap, socat, perl, ...(setpriv ? { setpriv } : {}) };
  const trial = spawnSync(isRoot ? setpriv! : bwrap, [...(isRoot ? dropTo(bwrap) : []), "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--ro-bind", "/", "/", "--", "/bin/true"], {
    env: { PATH: SYSTEM_PATH },
    timeout: 10_000,
  });
  if (trial.status !== 0) {
    const why = (trial.stderr?.toString("utf8").trim() || trial.error?.message || `exit ${String(trial.status)}`).slice(0, 300);
    return { available: false, reason: `no sandbox: bubblewrap cannot create namespaces here (${why}); ${INSTALL_HINT}` };
  }
  return { available: true, tools, detail: `bubblewrap: uid ${SANDBOX_ID}, user/PID/mount/IPC/UTS/network namespaces, plane-only network` };
}

/**
 * bwrap runs as the sandbox's uid and must reach the workspace by its path (it resolves even a
 * descriptor it is given to its path), through the data dir, which is 0700. Each ancestor the
 * server owns that the sandbox's group cannot search gets that group and g+x: search only, no
 * listing and no reading; the store and key files keep their own modes (0600).
 */
function letGroupTraverse(dir: string, gid: number): void {
  const uid = process.getuid?.();
  for (let current = dir; ; current = dirname(current)) {
    const stat = statSync(current);
    const searchable = (stat.mode & 0o001) !== 0 || (stat.gid === gid && (stat.mode & 0o010) !== 0);
    if (!searchable && stat.uid === uid) {
      chownSync(current, stat.uid, gid);
      chmodSync(current, (stat.mode & 0o7777) | 0o010);
    }
    if (dirname(current) === current) return;
  }
}

function dropTo(program: string): string[] {
  return ["--reuid", String(SANDBOX_ID), "--regid", String(SANDBOX_ID), "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--nnp", "--", program];
}

export interface SandboxOptions {
  /** Directories bound read-only besides the system ones (the project's install, Node's prefix). */
  readOnly: readonly string[];
  /** Cap on the processes and threads of one sandbox. */
  maxProcesses: number;
  /** Size of a sandbox's private /tmp. */
  tmpBytes: number;
}

export interface SandboxRequest {
  /** A name for the cgroups, unique among running sandboxes. */
  id: string;
  workspace: string;
  cwd: string;
  /** The program and its arguments (argv[0] resolved to an absolute path). */
  argv: readonly string[];
  /** The execution's environment, as it should be inside (AMCTL_SERVER as the caller knows the plane). */
  env: Readonly<Record<string, string>>;
  plane: PlaneAddress;
  /** The attempt's credential when the operation was granted egress. */
  egressCredential?: string;
  cpuSeconds: number;
  memoryBytes: number;
}

export interface PreparedSandbox {
  file: string;
  args: string[];
  /** The environment to spawn `file` with: fixed, nothing of the execution's. */
  env: Record<string, string>;
  /** bwrap's options, to write to SANDBOX_ARGS_FD, then close it. */
  bwrapArgs: Buffer;
  /** The program's environment, to write to ENVIRONMENT_FD, then close it. */
  environment: Buffer;
  /** Whether the kernel's OOM killer ended something in the sandbox (memory at its cgroup limit). */
  oomKilled(): boolean;
  /** The most memory the sandbox's cgroup held; 0 where there is none. */
  peakMemoryBytes(): number;
  /** Call when the attempt ends (again is harmless): kills whatever is left in the sandbox's cgroups, removes them and the sockets. */
  close(): void;
}

export class Sandboxes {
  constructor(
    private readonly tools: SandboxTools,
    private readonly options: SandboxOptions,
  ) {
    if (isRoot) sweepLeftoverCgroups();
  }

  async prepare(request: SandboxRequest): Promise<PreparedSandbox> {
    const owner = isRoot ? { uid: SANDBOX_ID, gid: SANDBOX_ID } : undefined;
    if (owner !== undefined) {
      chownSync(request.workspace, owner.uid, owner.gid);
      chmodSync(request.workspace, 0o700);
      letGroupTraverse(dirname(request.workspace), owner.gid);
    }
    const sockets = await PlaneSockets.open({ plane: request.plane, ...(request.egressCredential !== undefined ? { egressCredential: request.egressCredential } : {}), ...(owner ? { owner } : {}) });
    let cgroup: SandboxCgroup | undefined;
    let closed = false;
    try {
      cgroup = isRoot ? createSandboxCgroup(request.id, { maxProcesses: this.options.maxProcesses, memoryBytes: request.memoryBytes }) : undefined;
      const insidePort = request.plane.port;
      const egressPort = insidePort === EGRESS_PORT ? EGRESS_PORT + 1 : EGRESS_PORT;
      const bridges: Bridge[] = [{ port: insidePort, socket: "plane.sock" }, ...(sockets.egress ? [{ port: egressPort, socket: "egress.sock" }] : [])];
      const proxy = `http://127.0.0.1:${egressPort}`;
      const env = {
        ...request.env,
        AMCTL_SERVER: `http://127.0.0.1:${insidePort}`,
        ...(sockets.egress ? { HTTP_PROXY: proxy, HTTPS_PROXY: proxy, http_proxy: proxy, https_proxy: proxy, NO_PROXY: "", no_proxy: "" } : {}),
      };
      const options = bubblewrapOptions({ readOnly: this.options.readOnly, workspace: request.workspace, runDir: sockets.dir, cwd: request.cwd, tmpBytes: this.options.tmpBytes });
      const chain = this.chain(request, cgroup, launcherArgv(this.tools.perl, this.tools.socat, bridges, request.argv));
      const prepared: PreparedSandbox = {
        ...chain,
        env: { PATH: SYSTEM_PATH },
        bwrapArgs: Buffer.from(options.map((option) => `${option}\0`).join(""), "utf8"),
        environment: encodeEnvironment(env),
        oomKilled: () => cgroup?.oomKilled() ?? false,
        peakMemoryBytes: () => cgroup?.peakMemoryBytes() ?? 0,
        close: () => {
          if (closed) return;
          closed = true;
          sockets.close();
          cgroup?.killAndRemove();
        },
      };
      return prepared;
    } catch (error) {
      sockets.close();
      cgroup?.killAndRemove();
      throw error;
    }
  }

  /**
   * A shell (as the server's user, with the fixed environment) enters the cgroups and sets the
   * kernel's limits, then execs setpriv, which leaves root and execs bwrap: one pid throughout.
   *   RLIMIT_CPU    soft at the compute budget, hard a second later: SIGXCPU names the cause
   *                 (each process gets the whole allowance; the meter counts them together)
   *   RLIMIT_NPROC  the fork-bomb cap where no pids cgroup could be made (it counts every
   *                 process of the sandbox's uid on the host, so it is only a fallback)
   */
  private chain(request: SandboxRequest, cgroup: SandboxCgroup | undefined, inside: readonly string[]): { file: string; args: string[] } {
    const bwrap = [this.tools.bwrap, "--args", String(SANDBOX_ARGS_FD), "--", ...inside];
    const dropped = isRoot ? [this.tools.setpriv!, ...dropTo(this.tools.bwrap).slice(0, -1), ...bwrap] : bwrap;
    const procsFiles = cgroup?.procsFiles ?? [];
    const steps = [
      ...procsFiles.map((_, index) => `echo $$ > "$${index + 1}"`),
      ...(request.cpuSeconds > 0 ? [`ulimit -S -t ${request.cpuSeconds}`, `ulimit -H -t ${request.cpuSeconds + 1}`] : []),
      ...(cgroup === undefined ? [`ulimit -p ${this.options.maxProcesses}`] : []),
      ...(procsFiles.length > 0 ? [`shift ${procsFiles.length}`] : []),
      'exec "$@"',
    ];
    return { file: "/bin/sh", args: ["-c", steps.join(" && "), "amctl-sandbox-limits", ...procsFiles, ...dropped] };
  }
}

/** The directory holding Node's installation (bin/node's parent's parent), bound read-only so `node` runs inside. */
export function nodePrefix(): string {
  return dirname(dirname(process.execPath));
}
