import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { startTestServer } from "../test/helpers/server.js";
import * as raw from "../test/helpers/raw-http2.js";
import { ValidateContractRequestSchema } from "../src/gen/agentmachine/v1/contract_service_pb.js";
import { gzipSync } from "node:zlib";

process.on("uncaughtException", (e) => console.log("UNCAUGHT", e));
process.on("unhandledRejection", (e) => console.log("UNHANDLED", e));
const server = await startTestServer({ maxMessageBytes: 64 * 1024 });
const s = await raw.openSession(server.url);
const path = "/agentmachine.v1.ContractService/ValidateContract";
const grpcH = { "content-type": "application/grpc", te: "trailers" };
async function show(name: string, p: Promise<raw.RawResponse>) {
  try {
    const r = await p;
    console.log(name, r.status, raw.grpcStatus(r), JSON.stringify({ h: r.headers, t: r.trailers }), r.body.length, r.body.subarray(0, 200).toString());
  } catch (e) { console.log(name, "ERR", (e as Error).message); }
}
await show("garbage", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])) }));
await show("truncated", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.alloc(10), { declaredLength: 100 }) }));
await show("oversized-prefix", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.alloc(10), { declaredLength: 0xfffffff0 }) }));
await show("compressed-no-enc", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.from([10, 2, 123, 125]), { flags: 1 }) }));
await show("gzip-not-gzip", raw.h2Request(s, { path, headers: { ...grpcH, "grpc-encoding": "gzip" }, body: raw.envelope(Buffer.from([10, 2, 123, 125]), { flags: 1 }) }));
await show("gzip-ok", raw.h2Request(s, { path, headers: { ...grpcH, "grpc-encoding": "gzip" }, body: raw.envelope(gzipSync(Buffer.from([10, 2, 123, 125])), { flags: 1 }) }));
await show("gzip-bomb", raw.h2Request(s, { path, headers: { ...grpcH, "grpc-encoding": "gzip" }, body: raw.envelope(gzipSync(Buffer.alloc(1 << 20)), { flags: 1 }) }));
await show("br-unknown", raw.h2Request(s, { path, headers: { ...grpcH, "grpc-encoding": "br-unknown" }, body: raw.envelope(Buffer.from([10, 2, 123, 125]), { flags: 1 }) }));
const big = toBinary(ValidateContractRequestSchema, create(ValidateContractRequestSchema, { document: { case: "json", value: "x".repeat(70_000) } }));
await show("big", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(big) }));
await show("unknown-path", raw.h2Request(s, { path: "/agentmachine.v1.ContractService/Nope", headers: grpcH, body: raw.envelope(new Uint8Array()) }));
await show("empty-body", raw.h2Request(s, { path, headers: grpcH }));
await show("two-msgs", raw.h2Request(s, { path, headers: grpcH, body: [raw.envelope(Buffer.from([10, 2, 123, 125])), raw.envelope(Buffer.from([10, 2, 123, 125]))] }));
await show("empty-msg", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(new Uint8Array()) }));
await show("ok", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.from([10, 2, 123, 125])) }));
await show("bad-utf8", raw.h2Request(s, { path, headers: grpcH, body: raw.envelope(Buffer.from([10, 2, 0xff, 0xfe])) }));
await show("h2-text", raw.h2Request(s, { path, headers: { "content-type": "text/plain" }, body: Buffer.from("hi") }));
await show("h2-xml", raw.h2Request(s, { path, headers: { "content-type": "application/xml" }, body: Buffer.from("<a/>") }));
await show("h1-text", raw.h1Request(server.url, { path, headers: { "content-type": "text/plain" }, body: Buffer.from("hi") }));
await show("h1-xml", raw.h1Request(server.url, { path, headers: { "content-type": "application/xml" }, body: Buffer.from("<a/>") }));
await show("connect-badjson", raw.h1Request(server.url, { path, headers: { "content-type": "application/json" }, body: Buffer.from("{not json") }));
await show("connect-shape", raw.h1Request(server.url, { path, headers: { "content-type": "application/json" }, body: Buffer.from('{"json": 5}') }));
await show("connect-unknown", raw.h1Request(server.url, { path, headers: { "content-type": "application/json" }, body: Buffer.from('{"json": "{}", "bogus": 1}') }));
await show("connect-h2-badjson", raw.h2Request(s, { path, headers: { "content-type": "application/json" }, body: Buffer.from("{not json") }));
await show("connect-proto-garbage", raw.h1Request(server.url, { path, headers: { "content-type": "application/proto" }, body: Buffer.from([0xff, 0xff, 0xff]) }));
await show("connect-big", raw.h1Request(server.url, { path, headers: { "content-type": "application/json" }, body: Buffer.from(JSON.stringify({ json: "x".repeat(70000) })) }));
await show("grpcweb-garbage", raw.h1Request(server.url, { path, headers: { "content-type": "application/grpc-web+proto" }, body: raw.envelope(Buffer.from([0xff, 0xff, 0xff])) }));
await show("grpcweb-trunc", raw.h1Request(server.url, { path, headers: { "content-type": "application/grpc-web+proto" }, body: raw.envelope(Buffer.alloc(3), { declaredLength: 100 }) }));
await show("h1-unknown-path", raw.h1Request(server.url, { path: "/nope", headers: { "content-type": "application/json" }, body: Buffer.from("{}") }));

for (const [name, chunks, halfClose] of [
  ["random", [Buffer.from([0x00, 0xff, 0x13, 0x37, 0x80])], true],
  ["random-noclose", [Buffer.from([0x00, 0xff, 0x13, 0x37, 0x80])], false],
  ["partial-preface", [raw.HTTP2_PREFACE.subarray(0, 10)], true],
  ["preface+garbage", [raw.HTTP2_PREFACE, Buffer.from("garbage garbage garbage garbage")], false],
  ["preface+badframe", [raw.HTTP2_PREFACE, raw.h2Frame(4, 0, 1)], false],
] as const) {
  const t = Date.now();
  try { const o = await raw.rawExchange(server.port, [...chunks], { halfClose, timeoutMs: 3000 }); console.log(name, Date.now() - t, JSON.stringify(o.received.toString("latin1").slice(0, 120))); }
  catch (e) { console.log(name, "ERR", (e as Error).message); }
}
await raw.closeSession(s);
await server.close();
console.log(server.logs.filter((l) => l.level !== "debug" && l.level !== "info"));
