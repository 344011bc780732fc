// The whole governance path through the CLI, run for real: examples/governance.sh against an
// `amctl serve` child on a data dir prepared by `amctl init` (operator key and the default
// policy bundles), as a fresh install would have it.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { amctl } from "../helpers/cli.js";
import { repoRoot, startChildServer, tempDir } from "../helpers/server.js";

const run = promisify(execFile);

it("examples/governance.sh: init → root → agent delegation → policy dry run → grant → execution asking AuthorizeCall → overspend stopped → revoke", async () => {
  const dataDir = tempDir("amctl-walkthrough-");
  expect((await amctl(["init", "--data-dir", dataDir])).code).toBe(0);
  const server = await startChildServer(["--policy", join(dataDir, "policies")], { dataDir });
  try {
    const { stdout } = await run("bash", [join(repoRoot, "examples/governance.sh"), dataDir, server.url], { cwd: "/tmp" }).catch((error: { stdout?: string; stderr?: string }) => {
      throw new Error(`the walk-through failed:\n${error.stdout ?? ""}\n${error.stderr ?? ""}`);
    });
    expect(stdout).toMatch(/^toolGrant +allow +personal\.dev-tools /m);
    expect(stdout).toContain("denied: PERMISSION_DENIED OUT_OF_SCOPE");
    expect(stdout).toMatch(/denied: PERMISSION_DENIED POLICY_DENIED: the toolGrant gate denied this: rule no-matching-allow/);
    // The execution asked once for a tool and once for a model (500 estimated, 400 reported).
    expect(stdout).toContain('{"modelCalls":"1","tokens":"400","connectorCalls":"1"');
    expect(stdout).toContain('"reason":"budget_exhausted"');
    expect(stdout).toContain('"dimension":"BUDGET_DIMENSION_TOKENS"');
    expect(stdout).toContain("revoked (1 delegation)");
    expect(stdout).toContain("# done");
    expect(server.stderr()).not.toContain(server.token);
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
  }
}, 180_000);
