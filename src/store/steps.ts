// One procedure for both stores' writes, whatever their I/O: a write is written once as a
// generator that yields each statement's answer-to-be, and each backend runs it its own way —
// SQLite synchronously inside its savepoint (better-sqlite3 transactions cannot await), PostgreSQL
// awaiting each query on its transaction's connection. The order of the statements is the
// generator's, so it is the same in both.

/** A backend's answer to one step: a value (SQLite) or a promise of it (PostgreSQL). */
export type Maybe<T> = T | Promise<T>;

/** A write as a sequence of steps, ending with its result. */
export type Steps<T> = Generator<unknown, T, unknown>;

/** Yields one backend answer and resumes with its value: `const row = yield* step(port.read(name))`. */
export function* step<T>(answer: Maybe<T>): Generator<Maybe<T>, T, unknown> {
  return (yield answer) as T;
}

/** Runs `steps` whose every answer is a value (a promise here is a backend's bug). */
export function runSync<T>(steps: Steps<T>): T {
  let next = steps.next();
  while (!next.done) {
    if (next.value instanceof Promise) throw new Error("a synchronous store answered a step with a promise");
    next = steps.next(next.value);
  }
  return next.value;
}

/** Runs `steps`, awaiting each answer; a failed one is thrown into the steps where they await it. */
export async function runAsync<T>(steps: Steps<T>): Promise<T> {
  let next = steps.next();
  while (!next.done) {
    let value: unknown;
    try {
      value = await next.value;
    } catch (error) {
      next = steps.throw(error);
      continue;
    }
    next = steps.next(value);
  }
  return next.value;
}
