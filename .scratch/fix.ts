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
const wrapped = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
  if ("stream" in req) {
    const stream = req.stream;
    for (const ev of ["finish", "close"]) res.once(ev, () => console.log(Date.now() - t0, "server res", ev, "complete", req.complete, "closed", stream.closed, "state", JSON.stringify(stream.state)));
    res.once("finish", () => {
      // RFC 9113 §8.1: a server that answered before reading the whole request asks the client to stop with RST_STREAM(NO_ERROR).
      if (!req.complete && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  }
  handler(req as any, res as any);
};
const l = await listenOnePort(process.argv[2] === "fix" ? wrapped : (handler as any), "127.0.0.1", 0);
const url = `http://127.0.0.1:${l.address().port}`;
const s = await raw.openSession(url);
const big = toBinary(ValidateContractRequestSchema, create(ValidateContractRequestSchema, { document: { case: "json", value: "x".repeat(70000) } }));
const path = "/agentmachine.v1.ContractService/ValidateContract";
t0 = Date.now();
const st = s.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });

st.on("trailers", (t) => console.log(Date.now() - t0, "trailers", t["grpc-status"]));
st.on("close", () => console.log(Date.now() - t0, "close rstCode", st.rstCode));
st.on("error", (e) => console.log("error", String(e)));
st.resume();
st.end(raw.envelope(big));
await new Promise((r) => setTimeout(r, 3000));
console.log("closed after 1s?", st.closed);
// normal request still works on the same session
const ok = await raw.h2Request(s, { path, headers: { "content-type": "application/grpc", te: "trailers" }, body: raw.envelope(Buffer.from([10, 2, 123, 125])) });
console.log("next", raw.grpcStatus(ok));
// small request that is fully read should be unaffected
process.exit(0);
