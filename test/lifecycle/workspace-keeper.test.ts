// The keeper's rules on real directories, with a store of stand-in operations: what the sweep
// removes (ended and past retention only), the order in which the disk limit takes workspaces
// (oldest end first, never a running one), and the refusal when that is not enough.
import { mkdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError, Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { OperationSchema, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { workspaceOf } from "../../src/executors/workspace-files.js";
import { WorkspaceKeeper } from "../../src/lifecycle/workspace-keeper.js";
import { createLogger } from "../../src/api/logger.js";
import { tempDir } from "../helpers/server.js";

const log = createLogger("fatal", new Writable({ write: (_chunk, _encoding, callback) => callback() }));
const NOW = new Date("2026-01-10T00:00:00Z");
const HOUR = 3_600_000;

/** A data dir with one workspace of `bytes` per operation; `endedHoursAgo` undefined for one still running. */
function setUp(workspaces: Record<string, { bytes: number; endedHoursAgo?: number }>) {
  const dataDir = tempDir();
  const operations = new Map<string, Operation>();
  for (const [id, { bytes, endedHoursAgo }] of Object.entries(workspaces)) {
    const name = `operations/${id}`;
    const dir = workspaceOf(dataDir, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "data"), Buffer.alloc(bytes));
    operations.set(
      name,
      create(OperationSchema, {
        name,
        type: OperationType.EXECUTION_START,
        state: endedHoursAgo === undefined ? TaskState.RUNNING : TaskState.COMPLETED,
        createTime: timestampFromDate(new Date(NOW.getTime() - 100 * HOUR)),
        ...(endedHoursAgo === undefined ? {} : { endTime: timestampFromDate(new Date(NOW.getTime() - endedHoursAgo * HOUR)) }),
      }),
    );
  }
  const store = { getOperation: async (name: string) => operations.get(name) };
  const kept = () => Object.keys(workspaces).filter((id) => existsSync(workspaceOf(dataDir, `operations/${id}`)));
  return { dataDir, store, kept };
}

describe("WorkspaceKeeper", () => {
  it("sweeps only ended workspaces past their retention period", async () => {
    const { dataDir, store, kept } = setUp({ old: { bytes: 10, endedHoursAgo: 30 }, recent: { bytes: 10, endedHoursAgo: 2 }, running: { bytes: 10 } });
    await new WorkspaceKeeper({ store, dataDir, retentionMs: 24 * HOUR, diskLimitBytes: 0, log }).sweep(NOW);
    expect(kept()).toEqual(["recent", "running"]);
  });

  it("at the limit takes ended workspaces oldest end first, only as many as needed, never a running one", async () => {
    const { dataDir, store, kept } = setUp({
      newest: { bytes: 400, endedHoursAgo: 1 },
      oldest: { bytes: 400, endedHoursAgo: 5 },
      middle: { bytes: 400, endedHoursAgo: 3 },
      running: { bytes: 400 },
    });
    // 1600 held, limit 1000: oldest (→1200) and middle (→800) go.
    await new WorkspaceKeeper({ store, dataDir, retentionMs: 100 * HOUR, diskLimitBytes: 1000, log }).ensureRoom();
    expect(kept()).toEqual(["newest", "running"]);
  });

  it("refuses with ResourceExhausted naming the limit when running workspaces alone fill it", async () => {
    const { dataDir, store, kept } = setUp({ ended: { bytes: 300, endedHoursAgo: 1 }, running: { bytes: 1000 } });
    const error = await new WorkspaceKeeper({ store, dataDir, retentionMs: 100 * HOUR, diskLimitBytes: 1000, log })
      .ensureRoom()
      .catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((error as ConnectError).rawMessage).toContain("hold 1000 bytes, at or over their limit of 1000");
    expect(kept()).toEqual(["running"]);
  });

  it("with no limit, never refuses and removes nothing at admission", async () => {
    const { dataDir, store, kept } = setUp({ ended: { bytes: 5000, endedHoursAgo: 1 } });
    await new WorkspaceKeeper({ store, dataDir, retentionMs: 100 * HOUR, diskLimitBytes: 0, log }).ensureRoom();
    expect(kept()).toEqual(["ended"]);
  });
});
