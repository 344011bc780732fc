// Sandboxes started ahead of their attempts (src/sandbox/spare-sandboxes.ts), with the real
// bubblewrap and cgroups: a spare waits in cgroups of its own with nothing of an attempt, the
// next attempt takes it, one that never gets its options runs nothing, and the launcher runs
// nothing without a complete launch.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { executionIsolation } from "../../src/sandbox/execution-isolation.js";
import { encodeLaunch, LAUNCH_FD, launcherArgv } from "../../src/sandbox/launcher.js";
import { SANDBOX_ID, type PreparedSandbox, type Sandboxes } from "../../src/sandbox/sandbox.js";

let sandboxes: Sandboxes;
let plane: net.Server;
let root: string;
let made = 0;

beforeAll(async () => {
  const isolation = executionIsolation({ unsafeNoSandbox: false, maxProcesses: 64, tmpBytes: 16 * 1024 * 1024 });
  if (isolation.sandboxes === undefined) throw new Error(isolation.detail);
  sandboxes = isolation.sandboxes;
  plane = net.createServer((socket) => socket.end());
  await new Promise<void>((resolve) => plane.listen(0, "127.0.0.1", resolve));
  root = mkdtempSync(join(tmpdir(), "amctl-spares-"));
});

afterAll(() => {
  sandboxes.close();
  plane.close();
  rmSync(root, { recursive: true, force: true });
});

function prepare(argv: string[], env: Record<string, string> = {}): Promise<PreparedSandbox> {
  const workspace = join(root, `ws-${(made += 1)}`);
  mkdirSync(workspace);
  const { port } = plane.address() as net.AddressInfo;
  return sandboxes.prepare({
    workspace,
    cwd: workspace,
    argv,
    env,
    plane: { host: "127.0.0.1", port },
    cpuSeconds: 10,
    memoryBytes: 256 * 1024 * 1024,
    mounts: [],
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

async function run(sandbox: PreparedSandbox): Promise<number | null> {
  sandbox.start();
  const code = await exited(sandbox.child);
  sandbox.close();
  return code;
}

/** This process's children (vitest runs each file in a process of its own). */
function children(): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return /^PPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] === String(process.pid);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** The hierarchies a sandbox gets groups in: pids and memory on cgroup v1, the unified one on v2. */
const hierarchies = existsSync("/sys/fs/cgroup/cgroup.controllers") ? 1 : 2;

/** A process's cgroups that are sandboxes' groups, as paths under /sys/fs/cgroup. */
function sandboxGroups(pid: number): string[] {
  const groups = readFileSync(`/proc/${pid}/cgroup`, "utf8");
  return [...groups.matchAll(/^\d+:(pids|memory|):(\/amctl-sandboxes\/s\d+-\d+)$/gm)].map(([, controller, path]) => `${controller}${path}`);
}

/** Between attempts, the spares: children that have entered their groups (a spare is spawned first). */
function waitingSpares(): number[] {
  return children().filter((pid) => {
    try {
      return sandboxGroups(pid).length === hierarchies;
    } catch {
      return false; // gone meanwhile
    }
  });
}

async function eventually<T>(read: () => T, done: (value: T) => boolean): Promise<T> {
  for (let i = 0; i < 100; i += 1) {
    const value = read();
    if (done(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return read();
}

describe("spare sandboxes", () => {
  it("wait, after a first attempt, in cgroups of their own, as the sandbox's uid, with nothing of an attempt; the next attempt takes one", async () => {
    expect(await run(await prepare(["/bin/true"]))).toBe(0);
    const spares = await eventually(waitingSpares, (pids) => pids.length === 2);
    expect(spares).toHaveLength(2);
    for (const pid of spares) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
      expect(argv).toEqual([expect.stringMatching(/\/bwrap$/), "--args", "4", "--", expect.stringMatching(/\/perl$/), "-e", launcherArgv("perl")[2]]);
      expect(readFileSync(`/proc/${pid}/environ`, "utf8")).toBe("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0");
      expect(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]).toBe(String(SANDBOX_ID));
    }
    // A spare's cgroups show in /proc a moment before its start resolves and the pool holds it:
    // wait for that too, or the next attempt may find the pool still empty and start its own.
    expect(
      await eventually(
        () => sandboxes.sparesWaiting(),
        (waiting) => waiting === 2,
      ),
    ).toBe(2);
    const secret = "attempt-secret-value";
    const next = await prepare(["/bin/sh", "-c", 'test "$SECRET" = attempt-secret-value'], { SECRET: secret });
    expect(spares).toContain(next.child.pid);
    expect(sandboxGroups(next.child.pid!)).toHaveLength(hierarchies);
    expect(readFileSync(`/proc/${next.child.pid}/cmdline`, "utf8")).not.toContain(secret);
    expect(await run(next)).toBe(0);
  });

  it("one that never gets its options (its server died) runs nothing", async () => {
    const sandbox = await prepare(["/bin/true"]);
    let stderr = "";
    sandbox.child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    (sandbox.child.stdio[4] as Writable).destroy();
    (sandbox.child.stdio.at(LAUNCH_FD) as Writable).destroy();
    expect(await exited(sandbox.child)).not.toBe(0);
    sandbox.close();
    // Without options bwrap binds nothing: its new root is empty and the launcher is not there.
    expect(stderr).toMatch(/^bwrap: execvp \S*perl: No such file/);
  });

  it("are killed, and their cgroups removed, when the sandboxes close", async () => {
    const spares = await eventually(waitingSpares, (pids) => pids.length > 0); // the last test took one
    expect(spares.length).toBeGreaterThan(0);
    const groups = spares.flatMap(sandboxGroups);
    sandboxes.close();
    expect(await eventually(children, (pids) => pids.length === 0)).toEqual([]);
    for (const group of groups)
      expect(
        await eventually(
          () => existsSync(`/sys/fs/cgroup/${group}`),
          (there) => !there,
        ),
      ).toBe(false);
  });
});

describe("the launcher", () => {
  function launch(data: Buffer, marker: string): Promise<{ code: number | null; stderr: string }> {
    const [perl, ...args] = launcherArgv("/usr/bin/perl") as [string, ...string[]];
    const child = spawn(perl, args, { stdio: ["ignore", "ignore", "pipe", "ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    const pipe = child.stdio.at(LAUNCH_FD) as Writable;
    pipe.end(data);
    return exited(child).then((code) => ({ code, stderr: `${stderr}${existsSync(marker) ? "(ran)" : ""}` }));
  }
  const limits = { prlimitSyscall: 302, cpuSeconds: 0, maxProcesses: 0 };

  it("runs the program with exactly the launch's argv and environment", async () => {
    const marker = join(root, "ran-complete");
    const data = encodeLaunch({ limits, bridges: [], argv: ["/bin/sh", "-c", 'test "$A" = "x y" && touch "$1"', "sh", marker], env: { A: "x y" } });
    expect(await launch(data, marker)).toEqual({ code: 0, stderr: "(ran)" });
  });

  it.each([
    ["empty", () => Buffer.alloc(0)],
    ["cut in a field", (full: Buffer) => full.subarray(0, full.length - 3)],
    ["cut between fields", (full: Buffer) => full.subarray(0, full.indexOf("\0/bin/sh") + 1)],
  ])("runs nothing without a complete launch (%s)", async (_, cut) => {
    const marker = join(root, `ran-${made++}`);
    const full = encodeLaunch({ limits, bridges: [], argv: ["/bin/sh", "-c", 'touch "$1"', "sh", marker], env: {} });
    const { code, stderr } = await launch(cut(full), marker);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/^amctl sandbox: (no|incomplete) launch\n$/);
  });
});
