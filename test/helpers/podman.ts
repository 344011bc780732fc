// A real container runtime for end-to-end tests: Debian's podman with runc, configured for the
// tests alone, and a tiny image built here and pinned by digest. Nothing is pulled from a
// registry (CI reaches none) and no global configuration of the machine is changed:
//
// - podman, runc and busybox-static are installed with apt-get when missing (as postgres.ts
//   installs PostgreSQL); if that is impossible the caller fails — a missing runtime must never
//   turn into skipped tests.
// - `containers.conf` and `storage.conf` live in a private directory under the temp dir and
//   reach podman through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF (which the container executor
//   passes to the runtime's CLI). They choose runc, because crun refuses a host whose cgroups
//   are v1 in hybrid mode ("cgroups in hybrid mode not supported"), and `default_ulimits` within
//   this host's hard limits, because podman's default as root (nofile 1048576) exceeds them on
//   such hosts and runc then fails with "error setting rlimits" (nproc must also stay within
//   kernel.pid_max, to which podman lowers its own limit as it starts). Images and containers
//   are kept in a private storage root there too, with the vfs driver, which works on any
//   filesystem (overlay does not nest in an overlay root, as on many CI machines); the image is
//   2 MB.
// - The image is a root filesystem holding busybox-static and its applets, with `nobody`
//   (65534) in etc/passwd and a world-writable /scratch, imported with `podman import` and named
//   by the digest podman reports: `localhost/amctl-test-busybox@sha256:…`, the form `podman run`
//   takes for an image that only exists locally. It is built once per machine: its tag is a
//   hash of what went into it, and a later test file (or run) that finds that tag uses the image
//   as it is.
//
// Test files in parallel workers take turns through a lock directory, so that two never run
// apt-get or build the image at once.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { ensureDebianPackages } from "./debian-packages.js";

export interface Podman {
  /** The runtime to give `amctl serve --container-runtime`. */
  runtime: "podman";
  /** What points podman at the tests' configuration and storage: the server's environment must hold it. */
  env: { CONTAINERS_CONF: string; CONTAINERS_STORAGE_CONF: string };
  /** The test image pinned by digest, as a container.run spec names it. */
  image: string;
  /** Runs podman with the tests' configuration (e.g. `container exists NAME`). */
  podman(args: string[]): { status: number | null; stdout: string; stderr: string };
}

const PACKAGES = ["podman", "runc", "busybox-static"];
const REPOSITORY = "localhost/amctl-test-busybox";
/** Part of the image's tag: changed with the recipe, so that an image built by an older recipe is not reused. */
const RECIPE = "busybox-static, every applet, root and nobody, a world-writable /scratch; v1";
/** The limits podman gives a rootful container by default (containers/common): never more than these. */
const PODMAN_DEFAULT_LIMITS = { nofile: 1_048_576, nproc: 1_048_576 };

/** Where the tests' podman keeps its configuration, storage and state; one per user. */
const stateDir = join(tmpdir(), `amctl-podman-${process.getuid?.() ?? "user"}`);

/** This process's hard limit named `name` in /proc/self/limits (`ulimit -H`), at most `ceiling` (also for "unlimited"). */
function hardLimit(name: "Max open files" | "Max processes", ceiling: number): number {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((row) => row.startsWith(name));
  // "Max processes             96363                96363                processes"
  const hard = Number(line?.slice(name.length).trim().split(/\s+/)[1]);
  return Number.isInteger(hard) && hard > 0 ? Math.min(hard, ceiling) : ceiling;
}

/** Writes `text` to `path` unless it holds it already; by a rename, so a reader never sees half a file. */
function writeConfig(path: string, text: string): void {
  if (existsSync(path) && readFileSync(path, "utf8") === text) return;
  const partial = `${path}.${process.pid}`;
  writeFileSync(partial, text);
  renameSync(partial, path);
}

function configure(): Podman["env"] {
  const nofile = hardLimit("Max open files", PODMAN_DEFAULT_LIMITS.nofile);
  // podman lowers its own process limit to kernel.pid_max as it starts (so do conmon and runc,
  // its children): a container's limit can be no higher.
  const pidMax = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8").trim()) || PODMAN_DEFAULT_LIMITS.nproc;
  const nproc = hardLimit("Max processes", Math.min(pidMax, PODMAN_DEFAULT_LIMITS.nproc));
  const containersConf = join(stateDir, "containers.conf");
  const storageConf = join(stateDir, "storage.conf");
  writeConfig(
    containersConf,
    [
      "# Written by test/helpers/podman.ts for the tests' podman only (CONTAINERS_CONF).",
      "[containers]",
      "# podman's defaults exceed this host's hard limits (and kernel.pid_max, to which podman",
      "# lowers its own process limit), and runc cannot raise a limit above them.",
      `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
      "",
      "[engine]",
      "# crun refuses cgroup v1 hosts in hybrid mode; runc runs on v1, hybrid and v2.",
      'runtime = "runc"',
      "# No systemd needed: cgroups are managed through the filesystem, events go to a file.",
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `tmp_dir = "${join(stateDir, "libpod")}"`,
      "",
      "[network]",
      `network_config_dir = "${join(stateDir, "networks")}"`,
      "",
    ].join("\n"),
  );
  writeConfig(
    storageConf,
    [
      "# Written by test/helpers/podman.ts for the tests' podman only (CONTAINERS_STORAGE_CONF).",
      "[storage]",
      'driver = "vfs"',
      `graphroot = "${join(stateDir, "storage")}"`,
      `runroot = "${join(stateDir, "run")}"`,
      "",
    ].join("\n"),
  );
  return { CONTAINERS_CONF: containersConf, CONTAINERS_STORAGE_CONF: storageConf };
}

function podmanWith(env: Podman["env"]): Podman["podman"] {
  return (args) => {
    const result = spawnSync("podman", args, { env: { ...process.env, ...env }, encoding: "utf8", timeout: 120_000 });
    return { status: result.status, stdout: result.stdout ?? "", stderr: `${result.stderr ?? ""}${result.error ? String(result.error) : ""}` };
  };
}

function must(podman: Podman["podman"], args: string[]): string {
  const result = podman(args);
  if (result.status !== 0) throw new Error(`podman ${args.join(" ")} failed (${result.status}): ${result.stderr}`);
  return result.stdout.trim();
}

/** The test image by digest: imported once, found by its tag afterwards. */
function testImage(podman: Podman["podman"]): string {
  const busybox = "/bin/busybox";
  const tag = `${REPOSITORY}:${createHash("sha256").update(RECIPE).update(readFileSync(busybox)).digest("hex").slice(0, 16)}`;
  if (podman(["image", "exists", tag]).status !== 0) {
    const build = mkdtempSync(join(tmpdir(), "amctl-image-"));
    try {
      const root = join(build, "rootfs");
      for (const dir of ["bin", "etc", "tmp"]) mkdirSync(join(root, dir), { recursive: true });
      // Writable by everyone, as /tmp is in most images: only a read-only root keeps a container out.
      mkdirSync(join(root, "scratch"));
      chmodSync(join(root, "scratch"), 0o1777);
      writeFileSync(join(root, "bin", "busybox"), readFileSync(busybox), { mode: 0o755 });
      const applets = spawnSync(busybox, ["--list"], { encoding: "utf8" })
        .stdout.split("\n")
        .filter((name) => /^[a-z0-9_.[-]+$/.test(name) && name !== "busybox");
      if (!applets.includes("sh")) throw new Error(`${busybox} --list names no sh: is it busybox?`);
      for (const applet of applets) symlinkSync("busybox", join(root, "bin", applet));
      writeFileSync(join(root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n");
      writeFileSync(join(root, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
      const tar = join(build, "rootfs.tar");
      const packed = spawnSync("tar", ["-C", root, "--numeric-owner", "--owner=0", "--group=0", "-cf", tar, "."], { encoding: "utf8" });
      if (packed.status !== 0) throw new Error(`tar of the image's root filesystem failed: ${packed.stderr}`);
      must(podman, ["import", tar, tag]);
    } finally {
      rmSync(build, { recursive: true, force: true });
    }
  }
  const digest = must(podman, ["image", "inspect", "--format", "{{.Digest}}", tag]);
  if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new Error(`podman reported no digest for ${tag}: "${digest}"`);
  return `${REPOSITORY}@${digest}`;
}

/** The pid in a lock directory; NaN while it is being written or the lock is gone. */
function lockHolder(lock: string): number {
  try {
    return Number(readFileSync(join(lock, "pid"), "utf8"));
  } catch {
    return NaN;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Holds a lock directory (holding the holder's pid) while `fn` runs. A lock whose holder is
 * gone (a test worker killed mid-build) is taken over.
 */
async function locked<T>(fn: () => Promise<T>): Promise<T> {
  const lock = join(stateDir, "setup.lock");
  const deadline = Date.now() + 600_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, "pid"), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = lockHolder(lock);
      // A lock without a pid yet is being taken right now: wait for it like any other.
      if (holder > 0 && !isAlive(holder)) rmSync(lock, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`${lock} has been held for 10 minutes (pid ${holder})`);
      else await delay(200);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** podman, installed and configured for the tests, with the test image built. */
export async function setUpPodman(): Promise<Podman> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  return locked(async () => {
    await ensureDebianPackages(PACKAGES);
    const env = configure();
    const podman = podmanWith(env);
    const info = podman(["info", "--format", "{{.Host.OCIRuntime.Name}}"]);
    if (info.status !== 0 || info.stdout.trim() !== "runc")
      throw new Error(`podman does not work with the tests' configuration (${env.CONTAINERS_CONF}): ${info.stdout}${info.stderr}`);
    return { runtime: "podman", env, image: testImage(podman), podman };
  });
}
