// The server keeps each execution attempt's stdout and stderr in the operation store as they are
// produced (executors forward them here; a remote worker's arrive through
// WorkerService.AppendOutput), so that OutputService can replay and follow them after the
// process, its workspace and its worker are gone.
//
// Why the store and not files under the data dir: the store is already the server's only
// durable state, it survives a restart, and replicas on PostgreSQL share it — a follower on one
// replica reads what a worker appended through another. Files would be local to one replica and
// one more thing to back up and prune apart from the rest.
import type { OutputSink } from "../executors/executor.js";
import type { Logger } from "../api/logger.js";
import type { OutputKey, OutputStreamName, StoreOutput } from "../store/store.js";
import { OUTPUT_STREAMS } from "../executors/output-streams.js";
import { outputEnded, outputGap } from "../executors/output-errors.js";

/**
 * Where an attempt's output goes: the store, append by append, at most `limitBytes` a stream.
 * The limit is applied here too, not only where the output is captured: a remote worker (whose
 * own limit may be larger, or which may not keep one) cannot make the server keep more. Bytes
 * beyond it are dropped and the stream's end says it was truncated. Refused appends are thrown
 * as the wire's errors.
 */
export function storeOutputSink(store: StoreOutput, operation: string, attempt: number, limitBytes: number, log: Logger): OutputSink {
  const limit = BigInt(limitBytes);
  const clipped = new Set<OutputStreamName>();
  return {
    async append(stream, offset, data, end) {
      const key: OutputKey = { operation, attempt, stream };
      const start = offset < limit ? offset : limit;
      const kept = data.subarray(0, Number(limit - start));
      if (kept.length < data.length) clipped.add(stream);
      if (kept.length === 0 && data.length > 0 && end === undefined) return;
      const ending = end === undefined ? {} : { end: { truncated: end.truncated || clipped.has(stream) } };
      const result = await store.appendOutput({ ...key, offset: start, data: kept, time: new Date(), ...ending }).catch((error: unknown) => {
        log.warn({ err: error, operation, attempt, stream }, "could not keep execution output");
        throw error;
      });
      if (result.kind === "gap") throw outputGap(key, offset, result.size);
      if (result.kind === "ended") throw outputEnded(key, result.size);
    },
  };
}

/** Records that the attempt has begun (both streams empty), so a reader can tell a stream not yet written from one removed. */
export async function openOutput(sink: OutputSink): Promise<void> {
  for (const stream of OUTPUT_STREAMS) await sink.append(stream, 0n, new Uint8Array());
}

/**
 * Ends the attempt's streams that its executor did not end (it failed before capturing, or
 * a worker was lost), at what was kept, so that followers stop there.
 */
export async function closeOutput(store: StoreOutput, operation: string, attempt: number): Promise<void> {
  for (const stream of OUTPUT_STREAMS) {
    const { state } = await store.readOutput({ operation, attempt, stream }, 0n, 0);
    if (state !== undefined && !state.ended)
      await store.appendOutput({ operation, attempt, stream, offset: state.size, data: new Uint8Array(), end: { truncated: false }, time: new Date() });
  }
}
