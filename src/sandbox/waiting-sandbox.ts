// A sandbox's bubblewrap process, started before the sandbox is described: spawned with a fixed
// command line (`bwrap --args 4 -- perl -e LAUNCHER`), a fixed environment and, when the server
// is root, as the sandbox's uid; then moved into fresh cgroups. There it waits, having created
// nothing: bwrap reads its options (fd 4) to the end before it makes a namespace or starts a
// process, and the launcher reads its launch (fd 5) before it runs anything (launcher.ts). So
// every process of the sandbox starts inside its groups, and the spawn and the cgroup entry, the
// two slow steps of a start, can be done ahead of the attempt (spare-sandboxes.ts).
//
// If the server dies before it writes the options, bwrap reads none: it then has no binds, and
// its exec of the launcher fails in an empty root; nothing runs.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createSandboxCgroup, type SandboxCgroup } from "./sandbox-cgroup.js";

export interface BubblewrapCommand {
  file: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  /** The user to spawn it as (the sandbox's), when the server runs as root. */
  user?: { uid: number; gid: number };
  /** Whether to give it cgroups (pids.max at this cap), as root can. */
  cgroupMaxProcesses?: number;
}

export interface WaitingSandbox {
  /** bwrap, with pipes on fds 1 to 5 (output, progress, options, launch). */
  child: ChildProcess;
  /** Its groups; undefined where none can be made. */
  cgroup: SandboxCgroup | undefined;
  /** Kills it and removes its groups. */
  discard(): void;
}

let started = 0;

/**
 * Starts bwrap, waiting; `extraFds` are handed to it from fd 6 on (mount sources). With `stdin`,
 * the program's standard input is a pipe the caller writes (otherwise it is closed).
 */
export async function startWaitingSandbox(command: BubblewrapCommand, extraFds: readonly number[] = [], stdin = false): Promise<WaitingSandbox> {
  const child = spawn(command.file, command.args, {
    cwd: "/",
    env: command.env,
    stdio: [stdin ? "pipe" : "ignore", "pipe", "pipe", "pipe", "pipe", "pipe", ...extraFds],
    detached: true, // its own process group, so a kill reaches every descendant
    ...(command.user ?? {}),
  });
  // A pipe whose other end dies unread (a sandbox killed while it starts) reports ECONNRESET:
  // that ends the pipe, nothing more; its close still ends the capture.
  for (const pipe of child.stdio) pipe?.on("error", () => pipe.destroy());
  if (child.pid === undefined) {
    const [error] = (await once(child, "error")) as [Error];
    throw error;
  }
  let cgroup: SandboxCgroup | undefined;
  const discard = (): void => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone already
    }
    for (const pipe of child.stdio) pipe?.destroy();
    cgroup?.killAndRemove();
  };
  try {
    if (command.cgroupMaxProcesses !== undefined) cgroup = await createSandboxCgroup(`s${(started += 1)}`, command.cgroupMaxProcesses);
    await cgroup?.enter(child.pid);
  } catch (error) {
    discard();
    throw error;
  }
  return { child, cgroup, discard };
}
