// The summing of unauthenticated refusals: the first of each source and reason at once, the rest
// in one summary per interval that states what they have in common and how many they were;
// bounded memory (sources and reasons beyond the caps summed together); nothing lost at close.
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import type { AuditDraft } from "../../src/model/audit-chain.js";
import { RefusalSummaries } from "../../src/audit/refusal-summaries.js";
import { createLogger } from "../../src/api/logger.js";

const LIST = "/agentmachine.v1.OperationService/ListOperations";
const GET = "/agentmachine.v1.OperationService/GetOperation";

function refusal(overrides: { source?: string; reason?: string; rpc?: string; digest?: string } = {}): AuditDraft {
  const rpc = overrides.rpc ?? LIST;
  return {
    principal: "anonymous",
    rpc,
    commandRef: rpc.split("/").at(-1)!,
    decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED, reason: overrides.reason ?? "the credential is not a JWS" },
    requestDigest: overrides.digest ?? "ab".repeat(32),
    sourceAddress: overrides.source ?? "10.0.0.1",
  };
}

const opened: RefusalSummaries[] = [];
afterEach(async () => {
  for (const summaries of opened.splice(0)) await summaries.close();
});

/** Summaries over `intervalMs` whose appends land in `written` (failing for drafts `fail` picks). */
function summaries(options: { intervalMs?: number; maxSources?: number; fail?: (draft: AuditDraft) => boolean } = {}) {
  const written: AuditDraft[] = [];
  const logged: string[] = [];
  const log = createLogger(
    "error",
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logged.push(chunk.toString("utf8"));
        callback();
      },
    }),
  );
  const refusals = new RefusalSummaries({
    append: async (draft) => {
      if (options.fail?.(draft)) throw new Error("the store is gone");
      written.push(draft);
    },
    intervalMs: options.intervalMs ?? 3_600_000,
    maxSources: options.maxSources ?? 1000,
    log,
  });
  opened.push(refusals);
  return { refusals, written, logged };
}

const count = (draft: AuditDraft) => Number(draft.repeatCount ?? 0n);

describe("refusal summaries", () => {
  it("record the first refusal of a source and reason at once and sum the rest, keeping what they have in common", async () => {
    const { refusals, written } = summaries();
    await refusals.refused(refusal());
    expect(written).toEqual([expect.objectContaining({ rpc: LIST, sourceAddress: "10.0.0.1", time: expect.anything() })]);
    expect(written[0]!.repeatCount).toBeUndefined();
    await refusals.refused(refusal());
    await refusals.refused(refusal({ rpc: GET, digest: "cd".repeat(32) }));
    await refusals.refused(refusal({ source: "10.0.0.2" }));
    await refusals.refused(refusal({ source: "10.0.0.2" }));
    await refusals.refused(refusal({ source: "10.0.0.1", reason: "the credential has expired" }));
    expect(written).toHaveLength(3);

    await refusals.close();
    const summed = written.slice(3);
    // Source 10.0.0.1's two (different RPCs and digests: left empty), then 10.0.0.2's one (alike).
    expect(summed).toEqual([
      expect.objectContaining({
        repeatCount: 2n,
        rpc: "",
        commandRef: "",
        requestDigest: "",
        sourceAddress: "10.0.0.1",
        decision: expect.objectContaining({ reason: "the credential is not a JWS" }),
      }),
      expect.objectContaining({ repeatCount: 1n, rpc: LIST, commandRef: "ListOperations", requestDigest: "ab".repeat(32), sourceAddress: "10.0.0.2" }),
    ]);
    for (const summary of summed) expect(summary.lastTime).toBeDefined();
    expect(written.reduce((sum, draft) => sum + Math.max(count(draft), 1), 0)).toBe(6);
  });

  it("start again each interval, the summary of the last one written at its end", async () => {
    const { refusals, written } = summaries({ intervalMs: 100 });
    for (let i = 0; i < 5; i += 1) await refusals.refused(refusal());
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(written.map(count)).toEqual([0, 4]);
    await refusals.refused(refusal());
    expect(written.map(count)).toEqual([0, 4, 0]);
  });

  it("track at most so many sources: the others are summed together, with no record at once, naming no source when they differ", async () => {
    const { refusals, written } = summaries({ maxSources: 2 });
    for (const source of ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.3"]) await refusals.refused(refusal({ source }));
    expect(written.map((draft) => draft.sourceAddress)).toEqual(["10.0.0.1", "10.0.0.2"]);
    await refusals.close();
    expect(written.slice(2)).toEqual([
      expect.objectContaining({ repeatCount: 3n, sourceAddress: "", rpc: LIST, decision: expect.objectContaining({ reason: "the credential is not a JWS" }) }),
    ]);
  });

  it("track at most 16 reasons of a source: its other reasons are summed together", async () => {
    const { refusals, written } = summaries();
    for (let i = 0; i < 20; i += 1) await refusals.refused(refusal({ reason: `reason ${i}` }));
    expect(written).toHaveLength(16);
    await refusals.close();
    expect(written.slice(16)).toEqual([
      expect.objectContaining({ repeatCount: 4n, sourceAddress: "10.0.0.1", decision: expect.objectContaining({ reason: "" }) }),
    ]);
  });

  it("log a summary that could not be written and go on with the others; after close, record each refusal at once", async () => {
    const { refusals, written, logged } = summaries({ fail: (draft) => draft.sourceAddress === "10.0.0.1" && draft.repeatCount !== undefined });
    for (const source of ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"]) await refusals.refused(refusal({ source }));
    await refusals.close();
    expect(written.map((draft) => [draft.sourceAddress, count(draft)])).toEqual([
      ["10.0.0.1", 0],
      ["10.0.0.2", 0],
      ["10.0.0.2", 1],
    ]);
    expect(logged.join("")).toContain("could not record a summary of refused calls in the audit log");
    await refusals.refused(refusal());
    expect(written).toHaveLength(4);
  });
});
