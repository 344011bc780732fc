// Streams that last only as long as the caller's authority: a revocation of the caller's
// delegation or an ancestor (through this server, or seen by Authority.checkRevocations) ends the
// stream with Unauthenticated.
import type { HandlerContext } from "@connectrpc/connect";
import type { Authority, Principal } from "../governance/authority.js";

export async function* whileAuthorized<T>(
  authority: Authority,
  principal: Principal,
  context: HandlerContext,
  stream: (signal: AbortSignal) => AsyncIterable<T>,
): AsyncGenerator<T> {
  const revocation = authority.revocationSignal(principal);
  // Also when the call ends: a stream whose write never completes (an HTTP/2 stream reset while
  // connect-node waits for it to drain) is never resumed, so its `finally` would never run.
  context.signal.addEventListener("abort", revocation.dispose, { once: true });
  try {
    yield* stream(AbortSignal.any([context.signal, revocation.signal]));
    if (revocation.signal.aborted) throw revocation.signal.reason;
  } finally {
    context.signal.removeEventListener("abort", revocation.dispose);
    revocation.dispose();
  }
}
