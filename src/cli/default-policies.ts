// The default policy bundles: examples/policies/*.yaml of the checkout amctl runs from, which
// `amctl init` copies into DATA_DIR/policies. `amctl serve` applies that directory at start
// (unless --policy names another), so a fresh install is governed by them without a flag.
import { constants, copyFileSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** amctl runs from its sources (bin/amctl.mjs loads src/cli through tsx), so the examples are always beside them. */
const examples = fileURLToPath(new URL("../../examples/policies/", import.meta.url));

export interface CopiedPolicies {
  written: string[];
  /** Files already there: an operator's own bundles are never replaced. */
  kept: string[];
}

export function writeDefaultPolicies(dataDir: string): CopiedPolicies {
  const dir = join(dataDir, "policies");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const copied: CopiedPolicies = { written: [], kept: [] };
  for (const file of readdirSync(examples).filter((name) => /\.ya?ml$/.test(name)).sort()) {
    const target = join(dir, file);
    try {
      copyFileSync(join(examples, file), target, constants.COPYFILE_EXCL);
      copied.written.push(target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      copied.kept.push(target);
    }
  }
  return copied;
}
