// The operator's path through the CLI: init, a root signed offline, a server that trusts it,
// a narrower child for an agent, revocation — examples/delegations.sh, run for real.
import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { operatorKeyFiles } from "../../src/governance/operator-key.js";
import { amctl } from "../helpers/cli.js";
import { repoRoot, startChildServer, tempDir } from "../helpers/server.js";

const run = promisify(execFile);

it("init writes the operator key with mode 0600 and refuses to overwrite it", async () => {
  const dataDir = tempDir("amctl-init-");
  expect((await amctl(["init", "--data-dir", dataDir])).code).toBe(0);
  const files = operatorKeyFiles(dataDir);
  expect(statSync(files.privateKey).mode & 0o777).toBe(0o600);
  const again = await amctl(["init", "--data-dir", dataDir]);
  expect(again.code).toBe(2);
  expect(again.stderr).toContain("refusing to replace it");
});

it("examples/delegations.sh: init → root → child for an agent → the agent acts within its scope → revoke", async () => {
  const server = await startChildServer();
  try {
    const { stdout } = await run("bash", [join(repoRoot, "examples/delegations.sh"), server.dataDir, server.url], { cwd: "/tmp" });
    expect(stdout).toContain("agent-7");
    expect(stdout).toContain("revoked (1 delegation)");
    expect(stdout).toContain("# done");
    expect(server.stderr()).not.toContain(server.token);
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
  }
}, 120_000);
