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
// Process chain: bwrap (spawned as the sandbox's uid when the server is root, with a fixed
// command line; the server puts it in the sandbox's cgroups before handing it its options) →
// launcher (perl: bridges, rlimits) → the program. The launcher execs the program, so the
// spawned pid is bwrap's. Outside the sandbox only bwrap runs, with a fixed environment. Since
// nothing of an attempt is on that command line, bwrap is started ahead of the attempt when it
// can be (spare-sandboxes.ts; an attempt with mounts hands bwrap their descriptors, so it
// starts its own).
import { spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, statSync } from "node:fs";
import { planeEnvironment } from "../api/plane-environment.js";
import { dirname } from "node:path";
import type { Writable } from "node:stream";
import type { Mount } from "../gen/agentmachine/v1/operation_pb.js";
import { processesWithPids, type Member } from "../process/process-group.js";
import { resolveExecutable } from "../process/resolve-executable.js";
import { writeAndClose } from "../process/pipe-hand-off.js";
import { bubblewrapOptions } from "./bubblewrap-args.js";
import { LAUNCH_FD, encodeLaunch, launcherArgv, type Bridge } from "./launcher.js";
import { closeMountSources, MountUnavailable, openMountSources, type MountSource } from "./mount-sources.js";
import { PlaneSockets, type PlaneAddress } from "./plane-sockets.js";
import { sweepLeftoverCgroups } from "./sandbox-cgroup.js";
import { SpareSandboxes } from "./spare-sandboxes.js";
import { startWaitingSandbox, type BubblewrapCommand, type WaitingSandbox } from "./waiting-sandbox.js";

/** Where the sandbox's helper programs are looked up: system directories only. */
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** The file descriptor bwrap reads its arguments from. */
export const SANDBOX_ARGS_FD = 4;
/** bwrap's descriptor of the first mount's source; the others follow (mount-sources.ts). bwrap closes them once bound. */
export const MOUNT_FD_BASE = LAUNCH_FD + 1;
/** The sandbox's uid and gid: `nobody`, never the server's and never root. */
export const SANDBOX_ID = 65534;
const EGRESS_PORT = 3128;
/** Sandboxes kept started ahead of need (spare-sandboxes.ts). */
const SPARES = 2;

const INSTALL_HINT =
  "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap; perl comes with the system), or start the server with --unsafe-no-sandbox for development only";

export interface SandboxTools {
  bwrap: string;
  /** Runs the launcher (launcher.ts). */
  perl: string;
  /** This machine's prlimit64 system call, which the launcher sets the program's limits with. */
  prlimitSyscall: number;
  /** Whether bwrap binds by descriptor (--ro-bind-fd, bubblewrap 0.8.0 and later), which mounts need. */
  bindsDescriptors: boolean;
}

export type SandboxProbe = { available: true; tools: SandboxTools; detail: string } | { available: false; reason: string };

const isRoot = process.getuid?.() === 0;

/**
 * prlimit64's number per 64-bit Linux architecture (Node's `process.arch`); all of these share
 * RLIMIT_CPU = 0 and RLIMIT_NPROC = 6, which the launcher uses.
 */
const PRLIMIT64_SYSCALL: Readonly<Partial<Record<string, number>>> = { x64: 302, arm64: 261, riscv64: 261, loong64: 261, ppc64: 325, s390x: 334 };

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
  const perl = find("perl");
  const missing = [bwrap ? undefined : "bwrap (bubblewrap)", perl ? undefined : "perl"].filter(Boolean);
  if (missing.length > 0 || bwrap === undefined || perl === undefined)
    return { available: false, reason: `no sandbox: ${missing.join(", ")} not found; ${INSTALL_HINT}` };
  const prlimitSyscall = PRLIMIT64_SYSCALL[process.arch];
  if (prlimitSyscall === undefined) return { available: false, reason: `no sandbox: the launcher does not know the prlimit64 system call of ${process.arch}` };
  const help = spawnSync(bwrap, ["--help"], { env: { PATH: SYSTEM_PATH }, timeout: 10_000 });
  const tools: SandboxTools = { bwrap, perl, prlimitSyscall, bindsDescriptors: (help.stdout?.toString("utf8") ?? "").includes("--ro-bind-fd") };
  const trial = spawnSync(bwrap, ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--ro-bind", "/", "/", "--", "/bin/true"], {
    env: { PATH: SYSTEM_PATH },
    ...(isRoot ? { uid: SANDBOX_ID, gid: SANDBOX_ID } : {}),
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

export interface SandboxOptions {
  /** Directories bound read-only besides the system ones (the project's install, Node's prefix). */
  readOnly: readonly string[];
  /** Cap on the processes and threads of one sandbox. */
  maxProcesses: number;
  /** Size of a sandbox's private /tmp. */
  tmpBytes: number;
}

export interface SandboxRequest {
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
  /** The operation's mounts, as admitted (host paths resolved). */
  mounts: readonly Mount[];
  /** Whether the program reads a pipe on its standard input (an MCP stdio upstream); executions' is closed. */
  stdin?: boolean;
}

export interface PreparedSandbox {
  /**
   * bwrap, already in the sandbox's cgroups, waiting: its stdout, stderr and fd 3 are the
   * program's. Nothing runs before start().
   */
  child: ChildProcess;
  /** Hands bwrap its options and the launcher its launch, and closes both pipes: the sandbox starts. */
  start(): void;
  /**
   * Kills every process of the sandbox through its cgroups and says so; false where it has none
   * (the caller then kills the process tree it can see).
   */
  killAll(): boolean;
  /** Every process of the sandbox now, from its cgroups; undefined where it has none. */
  members(): Member[] | undefined;
  /** Whether the kernel's OOM killer ended something in the sandbox (memory at its cgroup limit). */
  oomKilled(): boolean;
  /** The most memory the sandbox's cgroup held; 0 where there is none. */
  peakMemoryBytes(): number;
  /** Call when the attempt ends (again is harmless): kills whatever is left in the sandbox's cgroups, removes them and the sockets. */
  close(): void;
}

export class Sandboxes {
  /** Directories above a workspace already made searchable by the sandbox's group (all workspaces share one). */
  private readonly traversable = new Set<string>();
  /**
   * bwrap with its options on a descriptor, started by the server as the sandbox's uid when it
   * runs as root (Node's spawn sets the uid and gid and clears the supplementary groups; bwrap
   * sets no_new_privs and drops every capability before the launcher runs).
   */
  private readonly command: BubblewrapCommand;
  private readonly spares: SpareSandboxes;

  constructor(
    private readonly tools: SandboxTools,
    private readonly options: SandboxOptions,
  ) {
    if (isRoot) sweepLeftoverCgroups();
    this.command = {
      file: tools.bwrap,
      args: ["--args", String(SANDBOX_ARGS_FD), "--", ...launcherArgv(tools.perl)],
      env: { PATH: SYSTEM_PATH },
      ...(isRoot ? { user: { uid: SANDBOX_ID, gid: SANDBOX_ID }, cgroupMaxProcesses: options.maxProcesses } : {}),
    };
    this.spares = new SpareSandboxes(() => startWaitingSandbox(this.command), SPARES);
  }

  async prepare(request: SandboxRequest): Promise<PreparedSandbox> {
    const owner = isRoot ? { uid: SANDBOX_ID, gid: SANDBOX_ID } : undefined;
    if (owner !== undefined) {
      chownSync(request.workspace, owner.uid, owner.gid);
      chmodSync(request.workspace, 0o700);
      const parent = dirname(request.workspace);
      if (!this.traversable.has(parent)) {
        letGroupTraverse(parent, owner.gid);
        this.traversable.add(parent);
      }
    }
    const sockets = await PlaneSockets.open({
      plane: request.plane,
      ...(request.egressCredential !== undefined ? { egressCredential: request.egressCredential } : {}),
      ...(owner ? { owner } : {}),
    });
    let waiting: WaitingSandbox | undefined;
    let mounts: MountSource[] = [];
    let closed = false;
    try {
      if (request.mounts.length > 0 && !this.tools.bindsDescriptors) {
        throw new MountUnavailable(
          "this host's bubblewrap is older than 0.8.0: it cannot bind a mount by descriptor, and a mount bound by path could be redirected",
        );
      }
      mounts = openMountSources(request.mounts, request.workspace, (dir) => owner && chownSync(dir, owner.uid, owner.gid));
      // A spare's stdin is closed and it holds no mount descriptors: such sandboxes start their own bwrap.
      const spare = mounts.length === 0 && request.stdin !== true ? this.spares.take() : undefined;
      waiting =
        spare ??
        (await startWaitingSandbox(
          this.command,
          mounts.map(({ fd }) => fd),
          request.stdin === true,
        ));
      const { child, cgroup } = waiting;
      cgroup?.limitMemory(request.memoryBytes);
      const insidePort = request.plane.port;
      const egressPort = insidePort === EGRESS_PORT ? EGRESS_PORT + 1 : EGRESS_PORT;
      const bridges: Bridge[] = [{ port: insidePort, socket: "plane.sock" }, ...(sockets.egress ? [{ port: egressPort, socket: "egress.sock" }] : [])];
      const proxy = `http://127.0.0.1:${egressPort}`;
      const env = {
        ...request.env,
        ...planeEnvironment(`http://127.0.0.1:${insidePort}`, request.env.AMCTL_TOKEN),
        ...(sockets.egress ? { HTTP_PROXY: proxy, HTTPS_PROXY: proxy, http_proxy: proxy, https_proxy: proxy, NO_PROXY: "", no_proxy: "" } : {}),
      };
      const bound = mounts.map(({ target, readWrite }, index) => ({ fd: MOUNT_FD_BASE + index, target, readWrite }));
      const options = bubblewrapOptions({
        readOnly: this.options.readOnly,
        workspace: request.workspace,
        runDir: sockets.dir,
        cwd: request.cwd,
        tmpBytes: this.options.tmpBytes,
        mounts: bound,
      });
      const limits = {
        prlimitSyscall: this.tools.prlimitSyscall,
        cpuSeconds: request.cpuSeconds,
        maxProcesses: cgroup === undefined ? this.options.maxProcesses : 0,
      };
      const discard = waiting.discard;
      const prepared: PreparedSandbox = {
        child,
        start: () => {
          writeAndClose(child.stdio[SANDBOX_ARGS_FD] as Writable, Buffer.from(options.map((option) => `${option}\0`).join(""), "utf8"));
          writeAndClose(child.stdio.at(LAUNCH_FD) as Writable, encodeLaunch({ limits, bridges, argv: request.argv, env }));
          // The bwrap descriptors of the mounts are open in bwrap now; the server's are not needed.
          closeMountSources(mounts);
          mounts = [];
          // Ready the next attempt's sandbox once this one runs, so the spawn does not delay it.
          setImmediate(() => this.spares.fill());
        },
        members: () => (cgroup === undefined ? undefined : processesWithPids(cgroup.pids())),
        killAll: () => {
          cgroup?.kill();
          return cgroup !== undefined;
        },
        oomKilled: () => cgroup?.oomKilled() ?? false,
        peakMemoryBytes: () => cgroup?.peakMemoryBytes() ?? 0,
        close: () => {
          if (closed) return;
          closed = true;
          closeMountSources(mounts);
          sockets.close();
          discard();
        },
      };
      return prepared;
    } catch (error) {
      closeMountSources(mounts);
      sockets.close();
      waiting?.discard();
      throw error;
    }
  }

  /** How many spare sandboxes wait to be taken (a started one counts once it is in its cgroups and the pool holds it). */
  sparesWaiting(): number {
    return this.spares.waiting();
  }

  /** Kills the spare sandboxes (the server or worker is stopping). */
  close(): void {
    this.spares.close();
  }
}

/** The directory holding Node's installation (bin/node's parent's parent), bound read-only so `node` runs inside. */
export function nodePrefix(): string {
  return dirname(dirname(process.execPath));
}
