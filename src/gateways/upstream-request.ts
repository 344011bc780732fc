// A POST to a provider, its answer's body as a Node stream, over undici's connection pools (kept
// alive per provider origin): the model gateway reads every byte of a stream it forwards, and a
// provider sends each event as an HTTP chunk of its own, tens of thousands per completion.
// Reading such a stream takes undici about a third of the CPU node:http's client takes (whose
// parser calls into JavaScript for each chunk), so the gateway keeps up with the provider.
import type { Readable } from "node:stream";
import { Agent, request } from "undici";

export interface UpstreamAnswer {
  status: number;
  ok: boolean;
  contentType: string | undefined;
  body: Readable;
  bytes(): Promise<Buffer>;
}

// No timeouts of its own, as with node:http: a model may think for minutes before its first
// token or between two. A call ends when its provider, its caller or its credential does.
const providers = new Agent({ headersTimeout: 0, bodyTimeout: 0 });

export async function postUpstream(url: string, headers: Record<string, string>, body: string, signal: AbortSignal): Promise<UpstreamAnswer> {
  const response = await request(url, { dispatcher: providers, method: "POST", headers, body, signal });
  const contentType = response.headers["content-type"];
  return {
    status: response.statusCode,
    ok: response.statusCode >= 200 && response.statusCode < 300,
    contentType: Array.isArray(contentType) ? contentType[0] : contentType,
    body: response.body,
    async bytes() {
      return Buffer.from(await response.body.arrayBuffer());
    },
  };
}
