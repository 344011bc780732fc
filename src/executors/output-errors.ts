// Errors of execution output (OutputService, WorkerService.AppendOutput), built in one place so
// each kind looks the same on the wire.
import { Code } from "@connectrpc/connect";
import { errorWithInfo } from "../api/errors.js";
import type { OutputKey } from "../store/store.js";

const where = (key: OutputKey) => ({ operation: key.operation, attempt: String(key.attempt), stream: key.stream });

export function noOutput(name: string, operationType: string) {
  return errorWithInfo(Code.FailedPrecondition, "NO_OUTPUT", `${name} is ${operationType}: only executions and containers have output`, {
    operation: name,
    operation_type: operationType,
  });
}

export function attemptNotStarted(name: string, attempt: number) {
  return errorWithInfo(Code.NotFound, "ATTEMPT_NOT_FOUND", `attempt ${attempt} of ${name} has not started`, { operation: name, attempt: String(attempt) });
}

export function outputRemoved(key: OutputKey) {
  return errorWithInfo(
    Code.OutOfRange,
    "OUTPUT_REMOVED",
    `the ${key.stream} of attempt ${key.attempt} of ${key.operation} is no longer kept (removed after the output retention period)`,
    where(key),
  );
}

export function offsetAhead(key: OutputKey, offset: bigint, size: bigint) {
  return errorWithInfo(
    Code.OutOfRange,
    "OFFSET_AHEAD",
    `${key.stream} offset ${offset} is beyond the ${size} bytes of attempt ${key.attempt} of ${key.operation}`,
    {
      ...where(key),
      offset: String(offset),
      size: String(size),
    },
  );
}

export function outputGap(key: OutputKey, offset: bigint, size: bigint) {
  return errorWithInfo(Code.OutOfRange, "OUTPUT_GAP", `an append at ${key.stream} offset ${offset} would leave a gap: the server has ${size} bytes`, {
    ...where(key),
    offset: String(offset),
    size: String(size),
  });
}

export function outputEnded(key: OutputKey, size: bigint) {
  return errorWithInfo(Code.FailedPrecondition, "OUTPUT_ENDED", `the ${key.stream} of attempt ${key.attempt} of ${key.operation} has ended at ${size} bytes`, {
    ...where(key),
    size: String(size),
  });
}

/** The server could not begin keeping the attempt's output (the store refused), so it takes none of it. */
export function outputNotKept(operation: string, attempt: number) {
  return errorWithInfo(Code.FailedPrecondition, "OUTPUT_NOT_KEPT", `the server keeps no output of attempt ${attempt} of ${operation}`, {
    operation,
    attempt: String(attempt),
  });
}
