// whileAuthorized lets go of its revocation listener when the call ends, even if the stream is
// never resumed again (connect-node waiting for a reset HTTP/2 stream to drain never resumes it).
import type { HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { Authority, Principal } from "../../src/governance/authority.js";
import { whileAuthorized } from "../../src/services/while-authorized.js";

function countingAuthority() {
  const state = { listening: 0 };
  const authority = {
    revocationSignal: () => {
      state.listening += 1;
      let disposed = false;
      return {
        signal: new AbortController().signal,
        dispose: () => {
          if (!disposed) state.listening -= 1;
          disposed = true;
        },
      };
    },
  } as unknown as Authority;
  return { authority, state };
}

describe("whileAuthorized", () => {
  it("stops listening for revocations when the call is aborted while the stream is suspended", async () => {
    const { authority, state } = countingAuthority();
    const call = new AbortController();
    const stream = whileAuthorized(authority, {} as Principal, { signal: call.signal } as HandlerContext, async function* () {
      yield 1;
      await new Promise(() => {}); // never ends
    });
    expect((await stream.next()).value).toBe(1); // suspended at its first yield, never resumed
    expect(state.listening).toBe(1);
    call.abort();
    expect(state.listening).toBe(0);
  });

  it("stops listening when the stream ends on its own", async () => {
    const { authority, state } = countingAuthority();
    const stream = whileAuthorized(authority, {} as Principal, { signal: new AbortController().signal } as HandlerContext, async function* () {
      yield 1;
    });
    for await (const _ of stream) void _;
    expect(state.listening).toBe(0);
  });
});
