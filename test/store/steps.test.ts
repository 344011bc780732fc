// The runners of the stores' shared write steps: SQLite's runs them without awaiting, PostgreSQL's
// awaits each answer, and a failed answer reaches the steps where they wait for it.
import { describe, expect, it } from "vitest";
import { runAsync, runSync, step, type Steps } from "../../src/store/steps.js";

/** An answerer that records what it was asked. */
function recording<T>(answer: (n: number) => T): { asked: number[]; answers: (n: number) => T } {
  const asked: number[] = [];
  return {
    asked,
    answers: (n) => {
      asked.push(n);
      return answer(n);
    },
  };
}

function* sumOf(answers: (n: number) => number | Promise<number>): Steps<number> {
  const first = yield* step(answers(1));
  const second = yield* step(answers(2));
  return first + second;
}

function* recovering(answer: () => Promise<number>): Steps<string> {
  try {
    return String(yield* step(answer()));
  } catch (error) {
    return `caught ${(error as Error).message}`;
  }
}

describe("write steps", () => {
  it("run synchronously on values, in order", () => {
    const { asked, answers } = recording((n) => n * 10);
    expect(runSync(sumOf(answers))).toBe(30);
    expect(asked).toEqual([1, 2]);
  });

  it("refuse a promise when run synchronously, and stop there", () => {
    const { asked, answers } = recording((n) => Promise.resolve(n));
    expect(() => runSync(sumOf(answers))).toThrow(/synchronous store/);
    expect(asked).toEqual([1]);
  });

  it("await each answer when run asynchronously, one after the other", async () => {
    const { asked, answers } = recording(async (n) => n * 10);
    await expect(runAsync(sumOf(answers))).resolves.toBe(30);
    expect(asked).toEqual([1, 2]);
  });

  it("throw a rejected answer into the steps, which may catch it or pass it on", async () => {
    await expect(runAsync(recovering(() => Promise.reject(new Error("deadlock"))))).resolves.toBe("caught deadlock");
    await expect(runAsync(sumOf(() => Promise.reject(new Error("deadlock"))))).rejects.toThrow("deadlock");
  });
});
