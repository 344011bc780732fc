// Retry policy defaults and the backoff between attempts: exponential, capped, with full
// jitter (a random delay between half and all of the exponential step) so that many tasks
// failing together do not retry together.
import type { RetryPolicy } from "../gen/agentmachine/v1/operation_pb.js";

export interface EffectiveRetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

export const defaultRetryPolicy: EffectiveRetryPolicy = { maxAttempts: 1, initialBackoffMs: 1000, maxBackoffMs: 60_000 };

function durationMs(duration: { seconds: bigint; nanos: number } | undefined): number | undefined {
  if (duration === undefined) return undefined;
  return Number(duration.seconds) * 1000 + Math.floor(duration.nanos / 1e6);
}

export function effectiveRetryPolicy(policy: RetryPolicy | undefined, defaults = defaultRetryPolicy): EffectiveRetryPolicy {
  return {
    maxAttempts: policy?.maxAttempts || defaults.maxAttempts,
    initialBackoffMs: durationMs(policy?.initialBackoff) ?? defaults.initialBackoffMs,
    maxBackoffMs: durationMs(policy?.maxBackoff) ?? defaults.maxBackoffMs,
  };
}

/** The delay before attempt `nextAttempt` (2 for the first retry). */
export function backoffMs(policy: EffectiveRetryPolicy, nextAttempt: number, random: () => number = Math.random): number {
  const step = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.max(0, nextAttempt - 2));
  return Math.round(step / 2 + random() * (step / 2));
}
