// A generated TypeScript client (protobuf-es + connect-es) calling the server over gRPC.
//   usage: AMCTL_TOKEN=... npx tsx examples/clients/validate-contract.ts [BASE_URL] FILE
// AMCTL_TOKEN must hold a credential (see `amctl delegation root`): it is sent with the call
// as `authorization: Bearer <credential>`.
// Prints the server's verdict for a contract document; exit 0 valid, 1 invalid.
import { readFileSync } from "node:fs";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";

const [baseUrl = "http://127.0.0.1:7070", file] = process.argv.slice(2);
if (file === undefined) {
  console.error("usage: validate-contract.ts [BASE_URL] FILE");
  process.exit(2);
}

const token = process.env.AMCTL_TOKEN?.trim();
if (!token) {
  console.error("AMCTL_TOKEN must hold a credential (see amctl delegation root)");
  process.exit(2);
}
const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const client = createClient(ContractService, createGrpcTransport({ baseUrl, interceptors: [bearer] }));
const { valid, violations } = await client.validateContract({
  document: { case: "json", value: readFileSync(file, "utf8") },
});
console.log(valid ? "valid" : "invalid");
for (const violation of violations) console.log(`${violation.path || "(document)"}: ${violation.message}`);
process.exit(valid ? 0 : 1);
