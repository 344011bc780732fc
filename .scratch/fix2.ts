import { create, toBinary } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as http2 from "node:http2";
import * as http from "node:http";
import { listenOnePort } from "../src/server/one-port-listener.js";
import { contractService } from "../src/services/contract-service.js";
import { buildServerContract } from "../src/contract/server-contract.js";
import { defaultConfig } from "../src/server/config.js";
import { ContractService, ValidateContractRequestSchema } from "../src/gen/agentmachine/v1/contract_service_pb.js";
import * as raw from "../test/helpers/raw-http2.js";

let t0 = Date.now();
const handler = connectNodeAdapter({ routes: (r) => r.service(ContractService, contractService(buildServerContract({ defaultBudget: defaultConfig.defaultBudget, startedAt: new Date() }))), readMaxBytes: 65536 });
const mode = process.argv[2];
const wrapped = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
  if ("stream" in req) {
    const stream = req.stream;
    for (const ev of ["finish", "close", "end", "wantTrailers"]) stream.on(ev, () => console.log(Date.now() - t0, "server stream", stream.id, ev, "readableEnded", stream.readableEnded, "closed", stream.closed));
    if (stream.id === 1) setTimeout(() => console.log("server stream 1 at 1.2s: closed", stream.closed, "destroyed", stream.destroyed, "rstCode", stream.rstCode, "readableLength", stream.readableLength, "session streams", JSON.stringify(stream.session?.state)), 1200);
    if (mode === "fix") {
      stream.once("wantTrailers", () => process.nextTick(() => {
        if (process.argv[4] === "destroy") { if (!stream.readableEnded && !stream.destroyed) stream.destroy(); return; }
        if (!stream.readableEnded && !stream.closed) { stream.close(http2.constants.NGHTTP2_NO_ERROR); if (process.argv[4] === "resume") (req as http2.Http2ServerRequest).resume(); }
      }));
    }
  }
  handler(req as any, res as any);
};
const l = await listenOnePort(wrapped, "127.0.0.1", 0);
const url = `http://127.0.0.1:${l.address().port}`;
const s = await raw.openSession(url);
const big = toBinary(ValidateContractRequestSchema, create(ValidateContractRequestSchema, { document: { case: "json", value: "x".repeat(70000) } }));
const path = "/agentmachine.v1.ContractService/ValidateContract";
t0 = Date.now();
const connect = process.argv[3] === "connect";
const st = s.request({ ":method": "POST", ":path": path, "content-type": connect ? "application/json" : "application/grpc", te: "trailers" });
st.on("response", (h) => console.log(Date.now() - t0, "client response", h[":status"]));
st.on("data", (d) => console.log(Date.now() - t0, "client data", String(d).slice(0, 100)));
st.on("trailers", (t) => { console.log(Date.now() - t0, "client trailers", t["grpc-status"]); if (process.argv[4] === "clientrst") setImmediate(() => st.close(http2.constants.NGHTTP2_CANCEL)); });
st.on("close", () => console.log(Date.now() - t0, "client close rstCode", st.rstCode));
st.on("error", (e) => console.log("client error", String(e)));
st.resume();
st.end(connect ? Buffer.from(JSON.stringify({json: "x".repeat(70000)})) : raw.envelope(big));
await new Promise((r) => setTimeout(r, 1500));
console.log("client closed after 1.5s?", st.closed);
const ok = await raw.h2Request(s, { path, headers: { "content-type": "application/grpc", te: "trailers" }, body: raw.envelope(Buffer.from([10, 2, 123, 125])) });
console.log("next", raw.grpcStatus(ok));
process.exit(0);
