// A binding's key reference resolved at call time: from the server's AMCTL_PROVIDER_ variables or
// DATA_DIR/provider-keys, an unresolvable one named without any value, and every key file known
// to the diagnostics as a secret.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localSecrets } from "../../src/diagnostics/local-secrets.js";
import { PROVIDER_KEYS_DIR, providerKey, providerKeyFileValues, ProviderKeyUnavailable } from "../../src/governance/provider-keys.js";
import { tempDir } from "../helpers/temp-dir.js";

function dataDirWithKey(name: string, value: string): string {
  const dataDir = tempDir();
  mkdirSync(join(dataDir, PROVIDER_KEYS_DIR));
  writeFileSync(join(dataDir, PROVIDER_KEYS_DIR, name), `${value}\n`);
  return dataDir;
}

describe("providerKey", () => {
  it("reads env: references from the environment and file: references from DATA_DIR/provider-keys, trimmed", async () => {
    const dataDir = dataDirWithKey("openai", "sk-file");
    expect(await providerKey("env:AMCTL_PROVIDER_A", dataDir, { AMCTL_PROVIDER_A: "sk-env\n" })).toBe("sk-env");
    expect(await providerKey("file:openai", dataDir, {})).toBe("sk-file");
    expect(await providerKey("", dataDir, {})).toBeUndefined();
  });

  it("names an unresolvable reference, never a value", async () => {
    const dataDir = tempDir();
    await expect(providerKey("env:AMCTL_PROVIDER_MISSING", dataDir, {})).rejects.toThrow(ProviderKeyUnavailable);
    await expect(providerKey("file:absent", dataDir, {})).rejects.toThrow(/file:absent/);
  });

  it("hands every key file to the diagnostics' known secrets", async () => {
    const dataDir = dataDirWithKey("claude", "sk-ant-canary-value");
    expect(providerKeyFileValues(dataDir)).toEqual(["sk-ant-canary-value"]);
    const store = { getOrCreateSecret: async () => "" } as unknown as Parameters<typeof localSecrets>[0];
    expect(await localSecrets(store, dataDir, [])).toContain("sk-ant-canary-value");
  });
});
