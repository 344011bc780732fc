// Clients of a running server, for the commands that call one: `--server URL`, or the
// environment's AMCTL_SERVER, or the default address of `amctl serve`.
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Option } from "commander";
import { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";

export const DEFAULT_SERVER = "http://127.0.0.1:7070";

/** The `--server <url>` option, defaulting to AMCTL_SERVER. */
export function serverOption(): Option {
  return new Option("--server <url>", "server base URL (or AMCTL_SERVER)").default(process.env.AMCTL_SERVER ?? DEFAULT_SERVER);
}

/** OperationService over the Connect protocol on HTTP/2 (cleartext, prior knowledge), so streams work. */
export function operationClient(server: string): Client<typeof OperationService> {
  return createClient(OperationService, createConnectTransport({ baseUrl: server, httpVersion: "2" }));
}
