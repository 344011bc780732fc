// The default policy bundles: examples/policies/*.yaml of the checkout amctl runs from, which
// `amctl init` copies into DATA_DIR/policies. `amctl serve` applies that directory at start and
// as it changes (unless --policy names another), so a fresh install is governed by them without
// a flag, even when the server was started before init.
import { constants, copyFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

/** amctl runs from its sources (bin/amctl.mjs loads src/cli through tsx), so the examples are always beside them. */
const examples = fileURLToPath(new URL("../../examples/policies/", import.meta.url));

export interface CopiedPolicies {
  written: string[];
  /** Files already there, or a bundle there that governs the same profile type: an operator's own bundles are never replaced. */
  kept: string[];
}

const bundleFiles = (dir: string): string[] =>
  readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort();

/** The profile type a bundle file says it governs, if it can be read as one. */
function governedType(file: string): unknown {
  try {
    return (parseYaml(readFileSync(file, "utf8")) as { profileType?: unknown } | null)?.profileType;
  } catch {
    return undefined;
  }
}

export function writeDefaultPolicies(dataDir: string): CopiedPolicies {
  const dir = join(dataDir, "policies");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const copied: CopiedPolicies = { written: [], kept: [] };
  // Two bundles for one profile type would stop the server from starting.
  const governed = new Map(bundleFiles(dir).map((file) => [governedType(join(dir, file)), join(dir, file)]));
  for (const file of bundleFiles(examples)) {
    const target = join(dir, file);
    const already = governed.get(governedType(join(examples, file)));
    if (already !== undefined) {
      copied.kept.push(already);
      continue;
    }
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
