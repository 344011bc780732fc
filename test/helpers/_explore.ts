import { readFileSync } from "node:fs";
import { ConnectError, createClient } from "@connectrpc/connect";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";
import { Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import { startTestServer } from "./server.js";
import { transportFor, type ProtocolName } from "./clients.js";

const server = await startTestServer();
for (const [protocol, httpVersion] of [["connect","2"],["connect","1.1"],["grpc","2"],["grpc-web","2"],["grpc-web","1.1"]] as const) {
  for (const gzip of [false, true]) {
    const t = transportFor(server.url, { protocol: protocol as ProtocolName, httpVersion, gzip, useBinaryFormat: false });
    const c = createClient(ContractService, t);
    let hdr: Headers | undefined;
    const r = await c.getContract({}, { onHeader: (h) => (hdr = h), headers: { "x-request-id": "abc-1" } });
    console.log(protocol, httpVersion, gzip, r.json.length, JSON.stringify([...(hdr?.entries() ?? [])]));
    try { await c.validateContract({}); } catch (e) { const ce = ConnectError.from(e); console.log(ce.code, ce.message, JSON.stringify(ce.findDetails(ViolationsSchema)), ce.metadata.get("x-request-id")); }
    const h = createClient(Health, t);
    const ac = new AbortController();
    try {
      for await (const m of h.watch({ service: "" }, { signal: ac.signal })) { console.log("watch", m.status); ac.abort(); }
      console.log("ended without error");
    } catch (e) { console.log("watch err", ConnectError.from(e).code, ConnectError.from(e).message); }
    try {
      for await (const m of h.watch({ service: "" }, { timeoutMs: 200 })) { console.log("watch2", m.status); }
    } catch (e) { console.log("watch2 err", ConnectError.from(e).code); }
  }
}
await server.close();
