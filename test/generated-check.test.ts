// The drift gate (scripts/check-generated.sh) really fires when src/gen or proto-vendor/ is
// edited by hand, and passes on an untouched copy.
import { spawnSync } from "node:child_process";
import { appendFileSync, cpSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { repoRoot, tempDir } from "./helpers/server.js";

describe("generated code drift gate", () => {
  let copy: string;
  const check = () => spawnSync("bash", ["scripts/check-generated.sh"], { cwd: copy, encoding: "utf8" });

  beforeEach(() => {
    copy = tempDir("amctl-drift-");
    for (const path of ["buf.yaml", "buf.gen.yaml", "proto", "proto-vendor", "src/gen", "scripts"]) {
      cpSync(join(repoRoot, path), join(copy, path), { recursive: true });
    }
    symlinkSync(join(repoRoot, "node_modules"), join(copy, "node_modules"));
  });

  it("passes on an untouched copy", () => {
    const result = check();
    expect(result.stdout + result.stderr).toContain("up to date");
    expect(result.status).toBe(0);
  });

  it("fails when a generated file was edited by hand", () => {
    appendFileSync(join(copy, "src/gen/agentmachine/v1/budget_pb.ts"), "\nexport const handEdit = 1;\n");
    const result = check();
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("src/gen differs");
  });

  it("fails when a proto changed but src/gen was not regenerated", () => {
    appendFileSync(join(copy, "proto/agentmachine/v1/errors.proto"), "\n// A new comment changes the generated doc comments.\nmessage Extra {}\n");
    expect(check().status).toBe(1);
  });

  it("fails when a vendored proto was edited by hand", () => {
    appendFileSync(join(copy, "proto-vendor/grpc/health/v1/health.proto"), "\n// edited\n");
    const result = check();
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("proto-vendor is out of date");
  });
});
