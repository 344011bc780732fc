// The breaking-change gate (scripts/check-breaking.sh) really fires: in a throwaway git repo
// holding a copy of our API, a deleted or renumbered field fails the check, an added field
// passes, and a deliberate break passes only with a new CHANGELOG "Breaking" bullet.
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, readFileSync, symlinkSync, writeFileSync, appendFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { repoRoot, tempDir } from "./helpers/server.js";

const budgetProto = "proto/agentmachine/v1/budget.proto";

function git(dir: string, ...args: string[]): void {
  execFileSync("git", ["-c", "user.name=test", "-c", "user.email=test@example.invalid", ...args], { cwd: dir, stdio: "pipe" });
}

function commitAll(dir: string, message: string): void {
  git(dir, "add", "-A");
  git(dir, "commit", "-qm", message);
}

function runCheck(dir: string): { status: number | null; output: string } {
  const result = spawnSync("bash", ["scripts/check-breaking.sh"], { cwd: dir, encoding: "utf8" });
  return { status: result.status, output: result.stdout + result.stderr };
}

function editBudget(dir: string, edit: (text: string) => string): void {
  const path = join(dir, budgetProto);
  writeFileSync(path, edit(readFileSync(path, "utf8")));
}

describe("buf breaking gate", () => {
  let repo: string;

  beforeEach(() => {
    repo = tempDir("amctl-breaking-");
    for (const path of ["buf.yaml", "proto", "proto-vendor", "scripts/check-breaking.sh", "CHANGELOG.md"]) {
      cpSync(join(repoRoot, path), join(repo, path), { recursive: true });
    }
    symlinkSync(join(repoRoot, "node_modules"), join(repo, "node_modules"));
    writeFileSync(join(repo, ".gitignore"), "node_modules\n");
    git(repo, "init", "-q");
    commitAll(repo, "released API");
  });

  it("passes when nothing changed", () => {
    git(repo, "commit", "-q", "--allow-empty", "-m", "no-op");
    expect(runCheck(repo)).toMatchObject({ status: 0 });
  });

  it("fails when a field is deleted", () => {
    editBudget(repo, (text) => text.replace(/\n\s*\/\/ Number of model tokens[^\n]*\n\s*uint64 tokens = 2;/, ""));
    commitAll(repo, "drop tokens");
    const { status, output } = runCheck(repo);
    expect(status).toBe(1);
    expect(output).toMatch(/Previously present field "2" with name "tokens" on message "Budget" was deleted/);
  });

  it("fails when a field is renumbered", () => {
    editBudget(repo, (text) => text.replace("uint64 tokens = 2;", "uint64 tokens = 20;"));
    commitAll(repo, "renumber tokens");
    const { status, output } = runCheck(repo);
    expect(status).toBe(1);
    expect(output).toContain('"tokens"');
  });

  it("passes when a field is added", () => {
    editBudget(repo, (text) =>
      text.replace("uint64 agent_concurrency = 8;", "uint64 agent_concurrency = 8;\n  // GPU memory in bytes.\n  uint64 gpu_memory_bytes = 9;"),
    );
    commitAll(repo, "add a dimension");
    expect(runCheck(repo)).toMatchObject({ status: 0 });
  });

  it("accepts a deliberate break only with a new CHANGELOG Breaking bullet in the same change", () => {
    editBudget(repo, (text) => text.replace("uint64 tokens = 2;", "uint64 tokens = 20;"));
    appendFileSync(join(repo, "CHANGELOG.md"), "\n### Breaking\n\n- `Budget.tokens` moved to field 20.\n");
    commitAll(repo, "renumber tokens, announced");
    const { status, output } = runCheck(repo);
    expect(status).toBe(0);
    expect(output).toContain("ACCEPTED");
    expect(output).toContain("`Budget.tokens` moved to field 20.");

    // The same bullet does not wave through the next break.
    editBudget(repo, (text) => text.replace("uint64 model_calls = 1;", "uint64 model_calls = 21;"));
    commitAll(repo, "renumber model_calls");
    expect(runCheck(repo).status).toBe(1);
  });
});
