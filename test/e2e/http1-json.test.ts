// Plain HTTP/1.1 JSON, the way `curl -X POST -H 'content-type: application/json' -d '{}' URL/...`
// calls the server: node's own http module, no Connect client. And HTTP/1.1 next to HTTP/2 on
// the same port.
import * as http from "node:http";
import * as http2 from "node:http2";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizationHeader } from "../helpers/auth.js";
import { ambientAuthorityContractText, exampleContractText } from "../helpers/contract-documents.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const VALIDATE = "/agentmachine.v1.ContractService/ValidateContract";
const GET_CONTRACT = "/agentmachine.v1.ContractService/GetContract";
const CHECK = "/grpc.health.v1.Health/Check";
const WATCH = "/grpc.health.v1.Health/Watch";

/** The credential, for every call but those of the health service (exempt: called without). */
function credentialFor(path: string): { authorization?: string } {
  return path.startsWith("/grpc.health.v1.Health/") ? {} : authorizationHeader(server.token);
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP/1.1 POST; `body` as given, JSON content type unless `headers` says otherwise; with the credential. */
function post1(path: string, body: string | Buffer, headers: http.OutgoingHttpHeaders = {}, agent?: http.Agent): Promise<Answer & { httpVersion: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${server.url}${path}`,
      { method: "POST", headers: { "content-type": "application/json", ...credentialFor(path), ...headers }, ...(agent ? { agent } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), httpVersion: res.httpVersion }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** The same POST as a stream of an HTTP/2 session. */
function post2(session: http2.ClientHttp2Session, path: string, body: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/json", ...credentialFor(path) });
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (headers = h));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve({ status: Number(headers[":status"]), headers, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
    stream.end(body);
  });
}

const json = (answer: Answer): unknown => JSON.parse(answer.body.toString("utf8"));

/** Splits a Connect streaming body into its enveloped messages: [flags, JSON payload]. */
function envelopes(body: Buffer): [number, unknown][] {
  const messages: [number, unknown][] = [];
  for (let at = 0; at < body.length; ) {
    const length = body.readUInt32BE(at + 1);
    messages.push([body[at]!, JSON.parse(body.subarray(at + 5, at + 5 + length).toString("utf8"))]);
    at += 5 + length;
  }
  return messages;
}

function envelope(message: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(message));
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

describe("HTTP/1.1 JSON POSTs (Connect unary, as curl sends them)", () => {
  it("GetContract answers 200 with the server's contract, its JSON text and an x-request-id", async () => {
    const answer = await post1(GET_CONTRACT, "{}");
    expect(answer.httpVersion).toBe("1.1");
    expect(answer.status).toBe(200);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(answer.headers["x-request-id"]).toMatch(UUID);
    const body = json(answer) as { contract: { kind: string }; json: string };
    expect(body.contract.kind).toBe("WorkspaceOperationContract");
    expect(JSON.parse(body.json)).toMatchObject({ kind: "WorkspaceOperationContract" });
  });

  it("ValidateContract of the upstream example answers {valid: true, violations: []}", async () => {
    const answer = await post1(VALIDATE, JSON.stringify({ json: exampleContractText }));
    expect(answer.status).toBe(200);
    expect(json(answer)).toEqual({ valid: true, violations: [] });
  });

  it("ValidateContract of a document with ambient authority answers 200 with valid: false and the violation", async () => {
    const answer = await post1(VALIDATE, JSON.stringify({ json: ambientAuthorityContractText() }));
    expect(answer.status).toBe(200);
    // The server writes fields at their default too, so a JSON client sees `valid: false`.
    expect(json(answer)).toEqual({
      valid: false,
      violations: [{ path: "/controls/ambientAuthority", message: "must be false", keyword: "const" }],
    });
  });

  it("Health/Check answers {status: SERVING}", async () => {
    const answer = await post1(CHECK, "{}");
    expect(answer.status).toBe(200);
    expect(json(answer)).toEqual({ status: "SERVING" });
  });

  it("ValidateContract without a document is HTTP 400 with a JSON error of code invalid_argument naming the field", async () => {
    const answer = await post1(VALIDATE, "{}");
    expect(answer.status).toBe(400);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(json(answer)).toMatchObject({
      code: "invalid_argument",
      details: expect.arrayContaining([
        expect.objectContaining({
          type: "buf.validate.Violations",
          debug: { violations: [expect.objectContaining({ field: { elements: [{ fieldName: "document" }] } })] },
        }),
        expect.objectContaining({ type: "google.rpc.BadRequest", debug: { fieldViolations: [expect.objectContaining({ field: "document" })] } }),
      ]),
    });
  });

  it("a body that is not JSON is HTTP 400 invalid_argument", async () => {
    const answer = await post1(VALIDATE, "{");
    expect(answer.status).toBe(400);
    expect(json(answer)).toMatchObject({ code: "invalid_argument" });
  });

  it("takes a gzipped request body", async () => {
    const answer = await post1(VALIDATE, gzipSync(JSON.stringify({ json: exampleContractText })), { "content-encoding": "gzip" });
    expect(answer.status).toBe(200);
    expect(json(answer)).toEqual({ valid: true, violations: [] });
  });

  it("gzips a large response for a client that accepts gzip, and only then", async () => {
    const gzipped = await post1(GET_CONTRACT, "{}", { "accept-encoding": "gzip" });
    expect(gzipped.headers["content-encoding"]).toBe("gzip");
    const plain = await post1(GET_CONTRACT, "{}");
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(gunzipSync(gzipped.body).toString("utf8")).toBe(plain.body.toString("utf8"));
    expect(gzipped.body.length).toBeLessThan(plain.body.length / 2);
  });

  it("the server enforces connect-timeout-ms: a Watch stream sends SERVING, then ends with deadline_exceeded", async () => {
    const answer = await post1(WATCH, envelope({ service: "" }), {
      "content-type": "application/connect+json",
      "connect-timeout-ms": "200",
    });
    expect(answer.status).toBe(200);
    const END_STREAM = 0b10;
    expect(envelopes(answer.body)).toEqual([
      [0, { status: "SERVING" }],
      [END_STREAM, expect.objectContaining({ error: expect.objectContaining({ code: "deadline_exceeded" }) })],
    ]);
  });
});

describe("HTTP/1.1 and HTTP/2 on the same port", () => {
  it("serves 20 HTTP/1.1 and 20 HTTP/2 calls interleaved, all at once, with no process warning", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const session = http2.connect(server.url);
    // 40 calls in flight once warned of an AbortSignal listener "leak" (MaxListenersExceeded).
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning);
    process.on("warning", onWarning);
    try {
      const body = JSON.stringify({ json: exampleContractText });
      const calls = Array.from({ length: 20 }, () => [post1(VALIDATE, body, {}, agent), post2(session, VALIDATE, body)] as const);
      const http1 = await Promise.all(calls.map(([h1]) => h1));
      const http2Answers = await Promise.all(calls.map(([, h2]) => h2));
      expect(http1.map((a) => a.httpVersion)).toEqual(Array(20).fill("1.1"));
      for (const answer of [...http1, ...http2Answers]) {
        expect(answer.status).toBe(200);
        expect(json(answer)).toEqual({ valid: true, violations: [] });
      }
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on next tick
      expect(warnings.map((w) => w.name)).toEqual([]);
    } finally {
      process.off("warning", onWarning);
      agent.destroy();
      session.close();
    }
  });
});
