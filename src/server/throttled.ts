/**
 * `emit`, called at most once per `intervalMs`: the first call goes through at once, the calls
 * in the interval after it are only counted, and the next call let through reports how many
 * there were (itself included). For warnings a flood would otherwise repeat thousands of times a
 * second.
 */
export function throttled<T>(intervalMs: number, emit: (latest: T, count: number) => void): (value: T) => void {
  let last = -Infinity;
  let count = 0;
  return (value) => {
    count += 1;
    const now = performance.now();
    if (now - last < intervalMs) return;
    last = now;
    emit(value, count);
    count = 0;
  };
}
