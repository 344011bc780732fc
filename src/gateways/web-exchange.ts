// Node's request/response objects, of HTTP/1.1 or HTTP/2 alike, as a fetch Request and back: a
// handler written against web-standard Request/Response (the MCP SDK's streamable HTTP server
// transport) then serves both HTTP versions through one path. The body is not carried over:
// callers read and bound it themselves.
import type * as http from "node:http";
import type * as http2 from "node:http2";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";

export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Connection-level headers: HTTP/2 forbids them (RFC 9113 §8.2.2; Node throws on them) and
 * HTTP/1.1's are Node's to set for its own connection.
 */
const CONNECTION_HEADERS = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/** The request line and headers of `req` as a body-less fetch Request (HTTP/2 pseudo-headers left out). */
export function webRequestOf(req: NodeRequest): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  // Only the path matters to the handler; the origin is a placeholder that resolves nowhere.
  return new Request(new URL(req.url ?? "/", "http://gateway.invalid"), { method: req.method, headers });
}

/** A JSON body with `status` and `headers`, written to either HTTP version. */
export function sendJson(res: NodeResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  (res as http.ServerResponse).writeHead(status, { "Content-Type": "application/json", ...headers }).end(JSON.stringify(body));
}

/**
 * Writes `response` to `res`, streaming its body chunk by chunk (a server-sent-event stream goes
 * out as it is produced). Resolves once it is all written or the client has gone; a client that
 * goes cancels the body.
 */
export async function sendWebResponse(response: Response, res: NodeResponse): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    if (!CONNECTION_HEADERS.has(name)) headers[name] = value;
  });
  (res as http.ServerResponse).writeHead(response.status, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  await pipeline(Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>), res as http.ServerResponse).catch(() => undefined);
}
