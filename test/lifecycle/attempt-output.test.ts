// The server's sink for an attempt's output, over a real store: it keeps at most the output
// limit of each stream whoever writes (a remote worker may send more than the server keeps),
// ends a clipped stream as truncated, and answers a refused append with the wire's error.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { storeOutputSink } from "../../src/lifecycle/attempt-output.js";
import { createLogger } from "../../src/api/logger.js";
import { SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import { tempDir } from "../helpers/temp-dir.js";

const bytes = (text: string) => new TextEncoder().encode(text);
const quiet = createLogger("fatal");
const key = { operation: "operations/SINK", attempt: 1, stream: "stdout" as const };

let store: SqliteStore;
beforeEach(() => {
  store = new SqliteStore(tempDir());
});
afterEach(() => store.close());

describe("storeOutputSink", () => {
  it("keeps at most the limit of a stream, drops what a writer sends beyond it, and ends the stream truncated", async () => {
    const sink = storeOutputSink(store, key.operation, key.attempt, 10, quiet);
    await sink.append("stdout", 0n, bytes("0123456789abc"));
    await sink.append("stdout", 13n, bytes("more beyond the limit"));
    await sink.append("stdout", 34n, new Uint8Array(), { truncated: false });
    const { chunks, state } = await store.readOutput(key, 0n, 10);
    expect(Buffer.concat(chunks.map((chunk) => chunk.data)).toString()).toBe("0123456789");
    expect(state).toEqual({ size: 10n, ended: true, truncated: true });
  });

  it("a stream within the limit ends as its writer says", async () => {
    const sink = storeOutputSink(store, key.operation, key.attempt, 10, quiet);
    await sink.append("stdout", 0n, bytes("short"));
    await sink.append("stdout", 5n, new Uint8Array(), { truncated: false });
    expect((await store.readOutput(key, 0n, 10)).state).toEqual({ size: 5n, ended: true, truncated: false });
  });

  it("refuses an append that would leave a gap (OutOfRange) or follows the end (FailedPrecondition)", async () => {
    const sink = storeOutputSink(store, key.operation, key.attempt, 100, quiet);
    await sink.append("stdout", 0n, bytes("abc"));
    await expect(sink.append("stdout", 5n, bytes("x"))).rejects.toMatchObject({ code: Code.OutOfRange });
    await sink.append("stdout", 3n, new Uint8Array(), { truncated: false });
    const error = await sink.append("stdout", 3n, bytes("late")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
  });
});
