// Where the operator's private key goes by default, and the rule that keeps it out of the data
// dir: the pure parts of src/governance/operator-key.ts (the CLI tests in
// test/e2e/governance-cli.test.ts run them through real `amctl` processes).
import { mkdirSync, symlinkSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { assertOutsideDataDir, defaultPrivateKeyFile, operatorKeyDir } from "../../src/governance/operator-key.js";
import { tempDir } from "../helpers/temp-dir.js";

describe("the per-user place", () => {
  it.each([
    ["AMCTL_CONFIG_DIR first", { AMCTL_CONFIG_DIR: "/srv/amctl-conf", XDG_CONFIG_HOME: "/x", HOME: "/h" }, "/srv/amctl-conf/operator-keys"],
    ["then an absolute XDG_CONFIG_HOME", { XDG_CONFIG_HOME: "/x", HOME: "/h" }, "/x/amctl/operator-keys"],
    ["a relative XDG_CONFIG_HOME is ignored, as the XDG spec says", { XDG_CONFIG_HOME: "conf", HOME: "/h" }, "/h/.config/amctl/operator-keys"],
    ["an empty one too", { AMCTL_CONFIG_DIR: "", XDG_CONFIG_HOME: "", HOME: "/h" }, "/h/.config/amctl/operator-keys"],
  ])("%s", (_name, env, dir) => {
    expect(operatorKeyDir(env)).toBe(dir);
  });

  it("one file per data dir, named by a hash of its resolved path: the same for every spelling of the path, different for another dir", () => {
    const env = { XDG_CONFIG_HOME: "/x", HOME: "/h" };
    const dataDir = tempDir("amctl-data-");
    const link = join(tempDir("amctl-link-"), "data");
    symlinkSync(dataDir, link);
    const file = defaultPrivateKeyFile(dataDir, env);
    expect(file).toMatch(/^\/x\/amctl\/operator-keys\/[0-9a-f]{16}\.key$/);
    expect(defaultPrivateKeyFile(`${dataDir}/`, env)).toBe(file);
    expect(defaultPrivateKeyFile(relative(process.cwd(), dataDir), env)).toBe(file);
    expect(defaultPrivateKeyFile(link, env)).toBe(file);
    expect(defaultPrivateKeyFile(join(link, "sub", ".."), env)).toBe(file);
    expect(defaultPrivateKeyFile(tempDir("amctl-data-"), env)).not.toBe(file);
    // A data dir that does not exist yet keeps its id once created.
    const later = join(link, "later");
    const before = defaultPrivateKeyFile(later, env);
    mkdirSync(later);
    expect(defaultPrivateKeyFile(join(dataDir, "later"), env)).toBe(before);
  });
});

describe("never inside the data dir", () => {
  const dataDir = tempDir("amctl-data-");
  const link = join(tempDir("amctl-link-"), "data");
  symlinkSync(dataDir, link);
  const beside = `${dataDir}-keys`;

  it.each([
    ["a file in it", join(dataDir, "operator.key")],
    ["a file deeper in it, in directories not made yet", join(dataDir, "a/b/operator.key")],
    ["the data dir itself", dataDir],
    ["a path through a symlink to it", join(link, "operator.key")],
    ["a file in it whose name starts with two dots", join(dataDir, "..operator.key")],
    ["a path that climbs back into it", join(dataDir, "..", relative(join(dataDir, ".."), dataDir), "k.key")],
  ])("refuses %s", (_name, file) => {
    expect(() => assertOutsideDataDir(dataDir, file)).toThrow(/it lies inside the data dir .*--key-out FILE/);
  });

  it.each([
    ["its parent", join(dataDir, "..", "operator.key")],
    ["a sibling whose name starts like it", join(beside, "operator.key")],
    ["a file named like it with dots", `${dataDir}..key`],
  ])("allows %s", (_name, file) => {
    expect(() => assertOutsideDataDir(dataDir, file)).not.toThrow();
  });
});
