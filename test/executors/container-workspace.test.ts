// The workspace a container writes to: its user (nobody, 65534) owns nothing on the host, so the
// executor makes the workspace writable by it before the run — given to 65534 alone when the
// server is root (a rootful runtime, where the container's 65534 is the host's), writable by
// everyone otherwise (a rootless runtime maps 65534 to a subordinate id).
import { mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { shareWorkspace } from "../../src/executors/container-executor.js";
import { tempDir } from "../helpers/temp-dir.js";

function workspace(): string {
  const dir = join(tempDir(), "workspace");
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

describe("shareWorkspace", () => {
  it("gives the workspace to nobody (65534) alone, mode 0700, when the server runs as root", () => {
    // Changing a directory's owner takes root: CI runs the suite as root (it installs podman).
    expect(process.getuid?.(), "this test runs as root").toBe(0);
    const dir = workspace();
    shareWorkspace(dir, 0);
    expect(statSync(dir)).toMatchObject({ uid: 65534, gid: 65534 });
    expect(statSync(dir).mode & 0o7777).toBe(0o700);
  });

  it("makes the workspace writable by everyone when the server runs as another user", () => {
    const dir = workspace();
    const before = statSync(dir);
    shareWorkspace(dir, 1000);
    expect(statSync(dir).mode & 0o7777).toBe(0o777);
    expect(statSync(dir)).toMatchObject({ uid: before.uid, gid: before.gid });
  });
});
