// The rules of naming a path inside a workspace, and which names are the server's own.
import { basename } from "node:path";
import { describe, expect, it } from "vitest";
import { captureLogPath } from "../../src/executors/output-capture.js";
import { isCaptureLog, workspacePathComponents } from "../../src/executors/workspace-files.js";

describe("workspacePathComponents", () => {
  it.each([
    ["", []],
    ["a", ["a"]],
    ["out/report.md", ["out", "report.md"]],
    ["out/", ["out"]],
    ["..a/b..", ["..a", "b.."]],
  ])("accepts %j as %j", (path, components) => {
    expect(workspacePathComponents(path)).toEqual(components);
  });

  it.each(["/etc/passwd", "..", "a/../b", "./a", "a/./b", "a//b", "/", "a\0b", "//"])("refuses %j", (path) => {
    expect(workspacePathComponents(path)).toBeUndefined();
  });
});

describe("isCaptureLog", () => {
  it("recognizes every name output-capture.ts gives an attempt's capture, at the workspace's top only", () => {
    for (const stream of ["stdout", "stderr"] as const) {
      for (const attempt of [1, 12]) expect(isCaptureLog([basename(captureLogPath("/w", stream, attempt))])).toBe(true);
    }
    expect(isCaptureLog(["sub", "stdout.1.log"])).toBe(false);
    expect(isCaptureLog(["stdout.log"])).toBe(false);
    expect(isCaptureLog(["stdout.1.log.bak"])).toBe(false);
  });
});
