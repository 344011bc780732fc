// The whole governance path through the CLI, run for real: examples/governance.sh against an
// `amctl serve` child on a data dir prepared by `amctl init` (operator key and the default
// policy bundles), as a fresh install would have it.
import { join } from "node:path";
import { expect, it } from "vitest";
import { amctl, runExampleAgainst } from "../helpers/cli.js";
import { startChildServer, tempDir } from "../helpers/server.js";

it("examples/governance.sh: init → root → agent delegation → policy dry run → grant → execution asking AuthorizeCall → overspend stopped → revoke", async () => {
  const dataDir = tempDir("amctl-walkthrough-");
  expect((await amctl(["init", "--data-dir", dataDir])).code).toBe(0);
  const stdout = await runExampleAgainst("governance.sh", await startChildServer(["--policy", join(dataDir, "policies")], { dataDir }));
  expect(stdout).toMatch(/^toolGrant +allow +personal\.dev-tools /m);
  expect(stdout).toContain("denied: PERMISSION_DENIED OUT_OF_SCOPE");
  expect(stdout).toMatch(/denied: PERMISSION_DENIED POLICY_DENIED: the toolGrant gate denied this: rule no-matching-allow/);
  // The execution asked once for a tool and once for a model (500 estimated, 400 reported).
  expect(stdout).toContain('{"modelCalls":"1","tokens":"400","connectorCalls":"1"');
  expect(stdout).toContain('"reason":"budget_exhausted"');
  expect(stdout).toContain('"dimension":"BUDGET_DIMENSION_TOKENS"');
  expect(stdout).toContain("revoked (1 delegation)");
  expect(stdout).toContain("# done");
}, 180_000);
