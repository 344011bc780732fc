// The bubblewrap (bwrap) command line of one sandbox: what an execution sees and reaches. Pure,
// so the layout can be read and tested in one place:
//
//   namespaces   user, PID, mount, IPC, UTS, cgroup and network, all new; no further user
//                namespaces inside (--disable-userns); a new session (no TIOCSTI into a
//                terminal); no capabilities; the kernel sets no_new_privs for bwrap's child
//   filesystem   an empty tmpfs root; system directories read-only (/usr and the merged-/usr
//                links, /etc); the project's install and Node's prefix read-only, so `amctl
//                call …` works inside; a private /tmp (size-capped); a new /proc showing only
//                the sandbox's processes, a minimal /dev; the workspace, read-write, at its
//                own path — the only writable place that outlives the attempt; the plane's
//                sockets read-only at /run/amctl; the operation's mounts (read-only host
//                paths, read-write workspace directories). Nothing else of the host: not the data dir
//                (keys, store, audit log, other workspaces), not the server's home, not /root
//   network      its own namespace: loopback only, where the launcher bridges the plane (see
//                launcher.ts)
//   lifetime     bwrap's child dies with bwrap (--die-with-parent); it is the PID namespace's
//                init, so when it goes, the kernel kills every process left in the namespace
//
// The options are handed to bwrap through a file descriptor (--args FD); the command itself
// stays on bwrap's command line (bwrap takes only options from the descriptor). The
// environment is cleared: the execution's own reaches the program through the launcher's pipe
// (launcher.ts), so its values never appear on a command line that other users of the host can
// read in /proc, and nothing the caller chose (LD_PRELOAD…) is in the environment of bwrap,
// which runs outside the sandbox.
import { existsSync, lstatSync } from "node:fs";

export const SANDBOX_RUN_DIR = "/run/amctl";

export interface SandboxLayout {
  /** Host directories bound read-only at their own path (the project's install, Node's prefix). */
  readOnly: readonly string[];
  /** The workspace, bound read-write at its own path. */
  workspace: string;
  /** The directory holding the plane's sockets, bound read-only at SANDBOX_RUN_DIR. */
  runDir: string;
  /** The working directory, inside the workspace. */
  cwd: string;
  /** Size of the private /tmp. */
  tmpBytes: number;
  /** The operation's mounts, each an open descriptor of bwrap's (mount-sources.ts), in binding order. */
  mounts: readonly BoundMount[];
}

export interface BoundMount {
  /** bwrap's descriptor of the source. */
  fd: number;
  target: string;
  readWrite: boolean;
}

/** System paths bound read-only when they exist; on a merged-/usr system the top-level ones are symlinks, recreated as such. */
const systemPaths = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

function systemBinds(): string[] {
  const args: string[] = [];
  for (const path of systemPaths) {
    if (!existsSync(path)) continue;
    const stat = lstatSync(path);
    if (stat.isSymbolicLink()) args.push("--symlink", `usr${path}`, path);
    else args.push("--ro-bind", path, path);
  }
  return args;
}

/** bwrap's options; the command follows `--` on its command line. */
export function bubblewrapOptions(layout: SandboxLayout): string[] {
  return [
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--hostname",
    "sandbox",
    ...systemBinds(),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--size",
    String(layout.tmpBytes),
    "--tmpfs",
    "/tmp",
    // After /tmp: a workspace or install that lies under /tmp on the host is bound over it.
    ...layout.readOnly.flatMap((dir) => ["--ro-bind", dir, dir]),
    "--bind",
    layout.workspace,
    layout.workspace,
    "--ro-bind",
    layout.runDir,
    SANDBOX_RUN_DIR,
    // By descriptor, not by path: bwrap checks that it mounted the very file it was handed.
    ...layout.mounts.flatMap(({ fd, target, readWrite }) => [readWrite ? "--bind-fd" : "--ro-bind-fd", String(fd), target]),
    "--chdir",
    layout.cwd,
    // The launcher gets no environment; it hands the program its own (launcher.ts).
    "--clearenv",
  ];
}
