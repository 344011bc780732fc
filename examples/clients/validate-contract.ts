// A generated TypeScript client (protobuf-es + connect-es) calling the server over gRPC.
//   usage: npx tsx examples/clients/validate-contract.ts [BASE_URL] FILE
// Prints the server's verdict for a contract document; exit 0 valid, 1 invalid.
import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";

const [baseUrl = "http://127.0.0.1:7070", file] = process.argv.slice(2);
if (file === undefined) {
  console.error("usage: validate-contract.ts [BASE_URL] FILE");
  process.exit(2);
}

const client = createClient(ContractService, createGrpcTransport({ baseUrl }));
const { valid, violations } = await client.validateContract({
  document: { case: "json", value: readFileSync(file, "utf8") },
});
console.log(valid ? "valid" : "invalid");
for (const violation of violations) console.log(`${violation.path || "(document)"}: ${violation.message}`);
process.exit(valid ? 0 : 1);
