// Clients of the server's API over Connect-Web (fetch), from the page's own origin, with the
// operator's credential as a bearer token.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { DelegationService } from "../gen/agentmachine/v1/delegation_service_pb.js";
import { DiagnosticsService } from "../gen/agentmachine/v1/diagnostics_service_pb.js";
import { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";
import { currentCredential } from "./credential.js";

const bearer: Interceptor = (next) => (request) => {
  const token = currentCredential();
  if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [bearer] });

export const operations = createClient(OperationService, transport);
export const delegations = createClient(DelegationService, transport);
export const audit = createClient(AuditService, transport);
export const diagnostics = createClient(DiagnosticsService, transport);
