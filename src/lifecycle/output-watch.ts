// One reader of an execution attempt's output (OutputService.WatchOutput): replay from the
// offsets asked for, then follow until the attempt ends — as one loop over the store, woken by
// this server's output appends and by the operation's events. Offsets are positions in the
// stored bytes, so a reader that resumes at the offsets it reached gets every later byte once.
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { operationTypeNames } from "../model/mapping.js";
import type { OutputKey, OutputStreamName, StoreEvents, StoreOperations, StoreOutput, StoredEvent } from "../store/store.js";
import { OUTPUT_STREAMS } from "../executors/output-streams.js";
import { attemptNotStarted, noOutput, offsetAhead, outputRemoved } from "../executors/output-errors.js";
import { isTerminal } from "../model/transitions.js";
import { type Waiter, waitForWakeUp, wakeAll } from "../model/wake-up.js";

export type OutputItem =
  | { kind: "chunk"; key: OutputKey; offset: bigint; data: Uint8Array }
  | { kind: "end"; key: OutputKey; offset: bigint; truncated: boolean };

export interface OutputWatch {
  operation: Operation;
  /** 0: the latest attempt. */
  attempt: number;
  /** Empty: both. */
  streams: readonly OutputStreamName[];
  offsets: Readonly<Record<OutputStreamName, bigint>>;
  follow: boolean;
  signal: AbortSignal;
}

/** Chunks read per stream and pass. */
const PAGE = 32;
/** How long a follower sleeps without a wake-up: another replica's appends are seen by reading. */
const POLL_MS = 1000;

/** Wakes an operation's output readers when this server stores its output or commits one of its events. */
export class OutputWakeUps {
  private readonly waiters = new Map<string, Set<Waiter>>();

  constructor(store: StoreOperations & StoreEvents & StoreOutput) {
    store.onOutput((key) => this.wake(key.operation));
    store.onCommit((events: StoredEvent[]) => {
      for (const { event } of events) this.wake(event.operation);
    });
  }

  private wake(operation: string): void {
    wakeAll(this.waiters.get(operation) ?? []);
  }

  wait(operation: string, signal: AbortSignal): Promise<void> {
    let waiters = this.waiters.get(operation);
    if (waiters === undefined) this.waiters.set(operation, (waiters = new Set()));
    const set = waiters;
    return waitForWakeUp(set, POLL_MS, signal).finally(() => {
      if (set.size === 0 && this.waiters.get(operation) === set) this.waiters.delete(operation);
    });
  }
}

const hasOutput = (type: OperationType): boolean => type === OperationType.EXECUTION_START || type === OperationType.CONTAINER_RUN;

/** The attempt is over: a later one started, or the operation ended. */
const attemptOver = (operation: Operation, attempt: number): boolean => operation.attempt > attempt || isTerminal(operation.state);

export async function* watchOutput(store: StoreOperations & StoreEvents & StoreOutput, wakeUps: OutputWakeUps, watch: OutputWatch): AsyncGenerator<OutputItem> {
  let operation = watch.operation;
  const { name } = operation;
  if (!hasOutput(operation.type)) throw noOutput(name, operationTypeNames.get(operation.type) ?? String(operation.type));
  const attempt = watch.attempt || Math.max(operation.attempt, 1);
  // A follower may wait for the next attempt (the first of a queued execution, or the retry of a retrying one).
  if (attempt > operation.attempt && (!watch.follow || attempt > operation.attempt + 1)) throw attemptNotStarted(name, attempt);
  const positions = new Map<OutputStreamName, bigint>(
    (watch.streams.length > 0 ? watch.streams : OUTPUT_STREAMS).map((stream) => [stream, watch.offsets[stream]]),
  );
  const keyOf = (stream: OutputStreamName): OutputKey => ({ operation: name, attempt, stream });

  // Before anything is sent: offsets a stream cannot reach, output no longer kept.
  for (const [stream, offset] of positions) {
    const { state } = await store.readOutput(keyOf(stream), 0n, 0);
    if (state === undefined && attemptOver(operation, attempt) && operation.attempt >= attempt) throw outputRemoved(keyOf(stream));
    const size = state?.size ?? 0n;
    if (offset > size) throw offsetAhead(keyOf(stream), offset, size);
  }

  while (positions.size > 0 && !watch.signal.aborted) {
    // Listening before reading: an append committed meanwhile wakes the wait below.
    const woken = watch.follow ? wakeUps.wait(name, watch.signal) : undefined;
    // Read after the operation: output stored before the attempt was over is all there is.
    const over = attemptOver(operation, attempt);
    let progressed = false;
    for (const [stream, from] of positions) {
      const key = keyOf(stream);
      const { chunks, state } = await store.readOutput(key, from, PAGE);
      let position = from;
      for (const chunk of chunks) {
        yield { kind: "chunk", key, offset: chunk.offset, data: chunk.data };
        position = chunk.offset + BigInt(chunk.data.length);
      }
      positions.set(stream, position);
      progressed ||= chunks.length === PAGE;
      // Ended: by its writer, or with the attempt (a writer that never ended it, e.g. a server that stopped).
      const stored = state?.size ?? 0n;
      if ((state?.ended === true || over) && position >= stored && chunks.length < PAGE) {
        yield { kind: "end", key, offset: position, truncated: state?.truncated ?? false };
        positions.delete(stream);
      }
    }
    if (progressed || positions.size === 0) continue;
    if (woken === undefined) return;
    await woken;
    operation = (await store.getOperation(name)) ?? operation;
  }
}
