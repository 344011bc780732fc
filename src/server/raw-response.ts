// Access to the raw HTTP response of the current call, for the one thing connect's handler API
// cannot do: abort a stream whose client stopped reading (its writes never complete, so an
// error can no longer be written after them).
import { AsyncLocalStorage } from "node:async_hooks";
import * as http2 from "node:http2";
import type * as http from "node:http";

type RawResponse = http.ServerResponse | http2.Http2ServerResponse;

const current = new AsyncLocalStorage<RawResponse>();

/** Runs the connect handler for one request with its response in scope. */
export function withRawResponse<R>(res: RawResponse, run: () => R): R {
  return current.run(res, run);
}

/**
 * Cuts off the current call's stream as "too slow". On HTTP/2 the stream is reset with
 * ENHANCE_YOUR_CALM, which gRPC and Connect clients report as ResourceExhausted; an HTTP/1.1
 * response has no such signal, so its connection is closed.
 */
export function cutOffCurrentStream(): (() => void) | undefined {
  const res = current.getStore();
  if (res === undefined) return undefined;
  return () => {
    if ("stream" in res && res.stream !== undefined) res.stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    else res.destroy();
  };
}

/**
 * Passes items through, cutting the stream off when one item has not been taken by the
 * transport within `timeoutMs` (the client stopped reading and its flow-control window is
 * full). The subscriber then resumes from the last sequence it received.
 */
export async function* cutOffWhenStalled<T>(items: AsyncIterable<T>, timeoutMs: number): AsyncGenerator<T> {
  const cutOff = cutOffCurrentStream();
  for await (const item of items) {
    const timer = cutOff ? setTimeout(cutOff, timeoutMs) : undefined;
    try {
      yield item;
    } finally {
      clearTimeout(timer);
    }
  }
}
