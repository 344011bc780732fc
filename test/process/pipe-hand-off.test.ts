// writeAndClose: a child reading a pipe to its end gets the data and the end of file at once,
// not when the event loop next polls (which a busy server may not do for many milliseconds).
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { writeAndClose } from "../../src/process/pipe-hand-off.js";
import { tempDir } from "../helpers/temp-dir.js";

/** A child that copies its fd 3 to `out` until the end of file, then writes `done`. */
function reader(dir: string) {
  const child = spawn("sh", ["-c", "cat <&3 > out && touch done"], { cwd: dir, stdio: ["ignore", "ignore", "ignore", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { pipe: child.stdio[3] as Writable, exited };
}

describe("writeAndClose", () => {
  it("delivers the data and the end of file while the event loop is still blocked", async () => {
    const dir = tempDir("amctl-hand-off-");
    const { pipe, exited } = reader(dir);
    writeAndClose(pipe, Buffer.from("options\0environment\0"));
    // Block the event loop (as a server's synchronous work after a spawn does): with `end`, the
    // end of file would only reach the child after this loop.
    const until = Date.now() + 5000;
    while (Date.now() < until && !existsSync(join(dir, "done"))) {
      // busy
    }
    expect(existsSync(join(dir, "done"))).toBe(true);
    await exited;
    expect(readFileSync(join(dir, "out"), "utf8")).toBe("options\0environment\0");
  });

  it("sends what does not fit in the pipe the usual way, all of it", async () => {
    const dir = tempDir("amctl-hand-off-");
    const { pipe, exited } = reader(dir);
    const data = Buffer.alloc(1 << 20, "x");
    writeAndClose(pipe, data);
    await exited;
    expect(readFileSync(join(dir, "out")).equals(data)).toBe(true);
  });
});
