// A POST to a provider over node:http(s), its answer's body as a Node stream: the model gateway
// reads every byte of a stream it forwards, and Node's streams cost less per chunk than fetch's
// web streams (bench/model-gateway.ts).
import * as http from "node:http";
import * as https from "node:https";
import type { Readable } from "node:stream";

export interface UpstreamAnswer {
  status: number;
  ok: boolean;
  contentType: string | undefined;
  body: Readable;
  bytes(): Promise<Buffer>;
}

export function postUpstream(url: string, headers: Record<string, string>, body: string, signal: AbortSignal): Promise<UpstreamAnswer> {
  const target = new URL(url);
  const send = target.protocol === "https:" ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const request = send(target, { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) }, signal }, (response) => {
      const status = response.statusCode ?? 502;
      resolve({
        status,
        ok: status >= 200 && status < 300,
        contentType: response.headers["content-type"],
        body: response,
        async bytes() {
          const chunks: Buffer[] = [];
          for await (const chunk of response) chunks.push(chunk as Buffer);
          return Buffer.concat(chunks);
        },
      });
    });
    request.on("error", reject);
    request.end(body);
  });
}
