// The layering gate (.dependency-cruiser.cjs, run by scripts/check.sh) really fires: run with the
// project's own rules on a small tree that breaks each of them once, it fails naming every rule
// and lets the downward imports of the same tree through.
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot, tempDir } from "./helpers/temp-dir.js";

const fixture: Record<string, string> = {
  "src/model/rule.ts": "export const rule = 1;\n",
  "src/store/store.ts": 'import { rule } from "../model/rule.js";\nexport const stored = rule;\n',
  "src/store/sqlite/sqlite-store.ts": 'import { stored } from "../store.js";\nexport const sqlite = stored;\n',
  "src/lifecycle/runner.ts": 'import { stored } from "../store/store.js";\nexport const runner = stored;\n',
  // Upwards: the store reaching into a domain, the API's vocabulary into the server.
  "src/store/upward.ts": 'import { runner } from "../lifecycle/runner.js";\nexport const upward = runner;\n',
  "src/api/errors.ts": 'import { server } from "../server/server.js";\nexport const errors = server;\n',
  // Sideways past the store interface, to one backend.
  "src/server/server.ts": 'import { sqlite } from "../store/sqlite/sqlite-store.js";\nexport const server = sqlite;\n',
  // The browser bundle importing a Node domain.
  "src/console/view.ts": 'import { runner } from "../lifecycle/runner.js";\nexport const view = runner;\n',
  // A directory that is in no layer.
  "src/misc/thing.ts": 'import { rule } from "../model/rule.js";\nexport const thing = rule;\n',
  // Two modules that import each other.
  "src/governance/a.ts": 'import { b } from "./b.js";\nexport const a = (): number => b();\n',
  "src/governance/b.ts": 'import { a } from "./a.js";\nexport const b = (): number => a();\n',
  "tsconfig.json": JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", strict: true } }),
};

describe("layering gate", () => {
  let violations: string[];
  let status: number | null;

  beforeAll(() => {
    const dir = tempDir("amctl-layers-");
    for (const [path, text] of Object.entries(fixture)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    const result = spawnSync(
      join(repoRoot, "node_modules/.bin/depcruise"),
      // As scripts/check.sh runs it.
      ["src", "--config", join(repoRoot, ".dependency-cruiser.cjs"), "--output-type", "err"],
      { cwd: dir, encoding: "utf8" },
    );
    status = result.status;
    // "  error layer-store: src/store/upward.ts → src/lifecycle/runner.ts"; a cycle continues on
    // the next lines, of which the first is what the module imports.
    violations = [...result.stdout.matchAll(/^\s*error (\S+: \S+) →\s+(\S+)/gm)].map(([, ruleAndFrom, to]) => `${ruleAndFrom} -> ${to}`);
  }, 60_000);

  it("fails the check", () => {
    expect(status).not.toBe(0);
  });

  it("names the rule of each upward import", () => {
    expect(violations).toContain("layer-store: src/store/upward.ts -> src/lifecycle/runner.ts");
    expect(violations).toContain("layer-api: src/api/errors.ts -> src/server/server.ts");
    expect(violations).toContain("layer-console: src/console/view.ts -> src/lifecycle/runner.ts");
  });

  it("names a store backend imported past the store interface", () => {
    expect(violations).toContain("store-backend-behind-open-store: src/server/server.ts -> src/store/sqlite/sqlite-store.ts");
  });

  it("names a directory that is in no layer", () => {
    expect(violations).toContain("layer-unknown: src/misc/thing.ts -> src/model/rule.ts");
  });

  it("names a cycle", () => {
    expect(violations).toContain("no-circular: src/governance/a.ts -> src/governance/b.ts");
  });

  it("lets downward imports through", () => {
    const downward = [
      "src/store/store.ts -> src/model/rule.ts",
      "src/lifecycle/runner.ts -> src/store/store.ts",
      "src/store/sqlite/sqlite-store.ts -> src/store/store.ts",
    ];
    for (const edge of downward) expect(violations.filter((v) => v.endsWith(edge))).toEqual([]);
  });
});
