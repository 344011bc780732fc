import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveExecutable } from "../../src/process/resolve-executable.js";
import { tempDir } from "../helpers/temp-dir.js";

function executable(dir: string, name: string, mode = 0o755): string {
  const path = join(dir, name);
  writeFileSync(path, "#!/bin/sh\n");
  chmodSync(path, mode);
  return path;
}

describe("resolveExecutable", () => {
  it("finds a bare name on PATH, the first executable file in PATH order, skipping relative entries", () => {
    const [first, second] = [tempDir(), tempDir()];
    executable(first, "runtime", 0o644); // not executable
    mkdirSync(join(first, "other")); // a directory is no program
    const found = executable(second, "runtime");
    executable(second, "other");
    expect(resolveExecutable("runtime", ["relative/dir", first, second].join(":"))).toBe(found);
    expect(resolveExecutable("other", `${first}:${second}`)).toBe(join(second, "other"));
  });

  it("takes a name with a slash as a path, made absolute, if it is an executable file", () => {
    const dir = tempDir();
    const path = executable(dir, "runtime");
    expect(resolveExecutable(path, "")).toBe(path);
    expect(() => resolveExecutable(join(dir, "missing"), "")).toThrow(`${join(dir, "missing")} is not an executable file`);
  });

  it("says when a bare name is nowhere on PATH", () => {
    expect(() => resolveExecutable("no-such-runtime", tempDir())).toThrow("no-such-runtime was not found on PATH");
  });
});
