// The rule both stores apply to an append of execution output (store.ts, OutputAppend): bytes
// go on at the stream's end, a retried append (one that starts at or before the end) stores only
// what it adds, and nothing may leave a gap or follow the end. Pure, so both backends share it
// and differ only in SQL.
import type { OutputAppend, OutputAppendResult, OutputRead, OutputState } from "./store.js";

export type OutputPlan =
  /** Store `data` at `offset` (possibly nothing, when only the state changes) and then the new state. */
  | { kind: "write"; offset: bigint; data: Uint8Array; state: OutputState }
  /** Already stored: nothing to write. */
  | { kind: "unchanged"; state: OutputState }
  | { kind: "gap" | "ended"; state: OutputState };

const EMPTY: OutputState = { size: 0n, ended: false, truncated: false };

export function planOutputAppend(stored: OutputState | undefined, append: OutputAppend): OutputPlan {
  const state = stored ?? EMPTY;
  const end = append.offset + BigInt(append.data.length);
  if (append.offset > state.size) return { kind: "gap", state };
  if (state.ended) return end <= state.size ? { kind: "unchanged", state } : { kind: "ended", state };
  const data = end > state.size ? append.data.subarray(Number(state.size - append.offset)) : new Uint8Array();
  if (data.length === 0 && append.end === undefined && stored !== undefined) return { kind: "unchanged", state };
  const next: OutputState = { size: state.size + BigInt(data.length), ended: append.end !== undefined, truncated: append.end?.truncated ?? false };
  return { kind: "write", offset: state.size, data, state: next };
}

/** How an append went, as its plan says. */
export function appendResult(plan: OutputPlan): OutputAppendResult {
  return { kind: plan.kind === "gap" || plan.kind === "ended" ? plan.kind : "stored", size: plan.state.size };
}

/** What readOutput answers: the chunk rows read from `from` on (rows are whole appends: the first is cut to start there) and the stream's state. */
export function outputRead(rows: readonly { start_offset: bigint | number; data: Uint8Array }[], from: bigint, state: OutputState | undefined): OutputRead {
  const chunks = rows
    .map((row) => ({ offset: BigInt(row.start_offset), data: row.data }))
    .filter((chunk) => chunk.offset + BigInt(chunk.data.length) > from)
    .map((chunk) => (chunk.offset >= from ? chunk : { offset: from, data: chunk.data.subarray(Number(from - chunk.offset)) }));
  return state === undefined ? { chunks } : { chunks, state };
}
