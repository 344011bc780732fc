// A bound provider's API key, from the reference on its binding (ModelProviderBindSpec.api_key_ref),
// read at every call so a rotated key needs no restart: `env:AMCTL_PROVIDER_…` from the server's
// environment, `file:NAME` from DATA_DIR/provider-keys/NAME. The value goes into the upstream
// request's headers and nowhere else; an unresolvable reference is named, never its value.
import { readdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";

export const PROVIDER_KEYS_DIR = "provider-keys";

/** The value of every key file there is, for the diagnostics' known secrets. */
export function providerKeyFileValues(dataDir: string): string[] {
  const dir = join(dataDir, PROVIDER_KEYS_DIR);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    try {
      return [readFileSync(join(dir, name), "utf8").trim()];
    } catch {
      return [];
    }
  });
}

export class ProviderKeyUnavailable extends Error {}

/** The key `ref` names, or undefined when the binding has none. */
export async function providerKey(ref: string, dataDir: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (ref === "") return undefined;
  // Admission validated the forms (operation.proto's pattern): a variable name or a plain file name.
  if (ref.startsWith("env:")) {
    const value = env[ref.slice(4)];
    if (value === undefined || value === "") throw new ProviderKeyUnavailable(`the provider key ${ref} is not set in the server's environment`);
    return value.trim();
  }
  const name = ref.slice(5);
  try {
    return (await readFile(join(dataDir, PROVIDER_KEYS_DIR, name), "utf8")).trim();
  } catch {
    throw new ProviderKeyUnavailable(`the provider key ${ref} cannot be read from ${PROVIDER_KEYS_DIR}/`);
  }
}
