// Installs Debian packages a test needs when they are missing, as root, with apt-get (an
// `apt-get update` first only if the plain install fails): a missing dependency must never turn
// into skipped tests. Shared by the PostgreSQL, podman and sandbox set-ups.
import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

async function aptGet(args: string[]): Promise<void> {
  await run("apt-get", args, { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, maxBuffer: 64 * 1024 * 1024, timeout: 540_000 });
}

/** The packages of `packages` that dpkg does not know as installed. */
export function missingDebianPackages(packages: readonly string[]): string[] {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${Package} is dpkg-query's format, not a template
  const query = spawnSync("dpkg-query", ["-W", "-f", "${Package} ${Status}\\n", ...packages], { encoding: "utf8" });
  const installed = new Set(
    (query.stdout ?? "")
      .split("\n")
      .filter((line) => line.endsWith(" install ok installed"))
      .map((line) => line.split(" ")[0]),
  );
  return packages.filter((name) => !installed.has(name));
}

/** Installs whichever of `packages` is missing; throws a message saying what to do when it cannot. */
export async function ensureDebianPackages(packages: readonly string[]): Promise<void> {
  const missing = missingDebianPackages(packages);
  if (missing.length === 0) return;
  if (!isRoot)
    throw new Error(`${missing.join(", ")} not installed and this user cannot install them: run \`apt-get install -y ${missing.join(" ")}\` as root`);
  try {
    await aptGet(["install", "-y", ...missing]);
  } catch {
    try {
      await aptGet(["update"]);
      await aptGet(["install", "-y", ...missing]);
    } catch (error) {
      throw new Error(`could not install ${missing.join(", ")} with apt-get: ${(error as { stderr?: string }).stderr ?? String(error)}`);
    }
  }
  const still = missingDebianPackages(packages);
  if (still.length > 0) throw new Error(`apt-get ran, but ${still.join(", ")} is still not installed`);
}
