// The README's first run, as a new user types it: `npm start` in one terminal, then in another
// `npx amctl init`, `npx amctl delegation root … > root.jwt` and `npx amctl whoami` against the
// server that was started before init made its operator key and default policies. The commands
// are read from README.md and run as they are written, in a checkout of their own (a directory
// linking this one's package.json, sources and node_modules, so `./.amctl` is the test's):
// only `npm ci` is left out (node_modules is installed), `npm start` gets the README's own
// `-- --listen 127.0.0.1:0` for a free port, and AMCTL_SERVER points amctl at that port.
import { spawn } from "node:child_process";
import { readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { afterAll, expect, it } from "vitest";
import { EvaluatePolicyRequestSchema } from "../../src/gen/agentmachine/v1/policy_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { createProfile, operationsClient, requestId } from "../helpers/operations.js";
import { policyClient } from "../helpers/policy.js";
import { repoRoot, tempDir } from "../helpers/server.js";
import { registerToken } from "../helpers/tokens.js";

const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
const shellBlocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!);

/** A checkout of this repository in a fresh directory: what `npm ci` would leave, by links. */
function checkout(): string {
  const dir = tempDir("amctl-first-run-");
  for (const entry of ["package.json", "package-lock.json", "tsconfig.json", "bin", "src", "examples", "proto", "node_modules"]) {
    symlinkSync(join(repoRoot, entry), join(dir, entry));
  }
  return dir;
}

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups) await cleanup();
});

/** `npm start -- --listen 127.0.0.1:0` in `cwd`, in a process group of its own (npm, sh, node); resolves with the server's URL. */
async function npmStart(cwd: string): Promise<{ url: string; log: () => string }> {
  const child = spawn("npm", ["start", "--", "--listen", "127.0.0.1:0"], { cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  cleanups.push(async () => {
    process.kill(-child.pid!, "SIGTERM");
    await exited;
  });
  let log = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not serve:\n${log}`)), 30_000);
    child.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString("utf8");
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"serving"/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.on("exit", () => reject(new Error(`npm start exited:\n${log}`)));
  });
  return { url, log: () => log };
}

/** Runs a README block with bash (`set -euo pipefail`, so the first failing line fails it) in `cwd`. */
function runBlock(block: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-euo", "pipefail", "-c", block], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

it("README first run: npm start, then amctl init, delegation root and whoami against the running server; the policies init wrote, and one added later, govern without a restart", async () => {
  const start = shellBlocks[0]!;
  expect(start).toMatch(/^npm ci && npm start +#/);
  expect(readme).toContain("`npm start -- --listen 127.0.0.1:0 --data-dir /tmp/amctl` picks a free port");
  const firstRun = shellBlocks.find((block) => block.includes("npx amctl init"));
  expect(firstRun).toMatch(/^npx amctl init .*\nnpx amctl delegation root .*> root\.jwt.*\nexport AMCTL_TOKEN=\$\(cat root\.jwt\).*\nnpx amctl whoami\b/);

  const dir = checkout();
  const server = await npmStart(dir);
  const env: NodeJS.ProcessEnv = { ...process.env, AMCTL_SERVER: server.url };
  delete env.AMCTL_TOKEN;
  const steps = await runBlock(firstRun!, dir, env);
  expect(steps, `the README's first-run steps failed:\n${steps.stderr}\nserver log:\n${server.log()}`).toMatchObject({ code: 0 });
  expect(steps.stdout).toMatch(/delegations\//);
  expect(server.log()).toContain('"msg":"trust anchors changed"');
  // What the server logged of the key is its id, never the key itself.
  const publicKey = readFileSync(join(dir, ".amctl/operator/operator.pub"), "utf8");
  expect(server.log()).not.toContain(publicKey.split("\n")[1]!);

  // The default bundles init copied into .amctl/policies were applied as they appeared.
  const root = readFileSync(join(dir, "root.jwt"), "utf8").trim();
  registerToken(server.url, root);
  const dev = await createProfile(operationsClient(server.url), "dev", ProfileType.PERSONAL);
  const policy = policyClient(server.url, root);
  const allowed = async (tool: string): Promise<boolean> =>
    (
      await policy.evaluatePolicy(
        create(EvaluatePolicyRequestSchema, {
          subject: { case: "operation", value: { requestId: requestId("check"), profile: dev, spec: { kind: { case: "toolGrantApply", value: { tool } } } } },
        }),
      )
    ).allowed;
  expect(await allowed("git")).toBe(true);
  expect(await allowed("nmap")).toBe(false);

  // A bundle added to the policy directory (in place of the default one for personal profiles).
  const personal = join(dir, ".amctl/policies/personal.yaml");
  const source = readFileSync(personal, "utf8").replace('"browser"]', '"browser", "nmap"]');
  rmSync(personal);
  writeFileSync(join(dir, ".amctl/policies/personal-with-nmap.yaml"), source);
  await expect.poll(() => allowed("nmap"), { timeout: 10_000 }).toBe(true);
}, 120_000);
