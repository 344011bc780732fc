// The operator's path through the CLI: init, a root signed offline, a server that trusts it,
// a narrower child for an agent, revocation — examples/delegations.sh, run for real.
import { statSync } from "node:fs";
import { expect, it } from "vitest";
import { operatorKeyFiles } from "../../src/governance/operator-key.js";
import { amctl, runExampleAgainst } from "../helpers/cli.js";
import { startChildServer, tempDir } from "../helpers/server.js";

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
  const stdout = await runExampleAgainst("delegations.sh", await startChildServer());
  expect(stdout).toContain("agent-7");
  expect(stdout).toContain("revoked (1 delegation)");
  expect(stdout).toContain("# done");
}, 120_000);
