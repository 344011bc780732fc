import { create, toBinary } from "@bufbuild/protobuf";
import { startTestServer } from "../test/helpers/server.js";
import * as raw from "../test/helpers/raw-http2.js";
import { clientFor } from "../test/helpers/clients.js";
import { ContractService, ValidateContractRequestSchema } from "../src/gen/agentmachine/v1/contract_service_pb.js";
import * as http2 from "node:http2";

const server = await startTestServer({ maxMessageBytes: 64 * 1024 });
const path = "/agentmachine.v1.ContractService/ValidateContract";
const size = Number(process.argv[2] ?? 70000);
const big = toBinary(ValidateContractRequestSchema, create(ValidateContractRequestSchema, { document: { case: "json", value: "x".repeat(size) } }));
const s = http2.connect(server.url);
const t0 = Date.now();
const st = s.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
for (const ev of ["response", "trailers", "end", "finish", "close", "error", "aborted", "wantTrailers"]) st.on(ev, (a: unknown) => console.log(Date.now() - t0, "client stream", ev, ev === "error" ? String(a) : JSON.stringify(a ?? null)));
st.on("data", () => {});
st.write(raw.envelope(big));
st.end();
await new Promise((r) => setTimeout(r, 2000));
console.log("after 2s: closed", st.closed, "rstCode", st.rstCode, "state", JSON.stringify(st.state), "writableFinished", st.writableFinished, "bufferSize", st.bufferSize);
st.close(http2.constants.NGHTTP2_CANCEL);
s.close();
for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
  const c = clientFor(ContractService, server.url, { protocol });
  const t = Date.now();
  try {
    await c.validateContract({ document: { case: "json", value: "x".repeat(size) } }, { timeoutMs: 4000 });
    console.log(protocol, "ok");
  } catch (e) { console.log(protocol, "client error after", Date.now() - t, "ms:", String(e)); }
}
await server.close();
process.exit(0);
