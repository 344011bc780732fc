// Clients of a running server, for the commands that call one: `--server URL`, or the
// environment's AMCTL_SERVER, or the default address of `amctl serve`; every call carries the
// credential from `--token-file FILE` or AMCTL_TOKEN.
import { readFileSync } from "node:fs";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Option } from "commander";
import { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";
import { bearerInterceptor } from "../governance/bearer.js";

export const DEFAULT_SERVER = "http://127.0.0.1:7070";

/** The `--server <url>` option, defaulting to AMCTL_SERVER. */
export function serverOption(): Option {
  return new Option("--server <url>", "server base URL (or AMCTL_SERVER)").default(process.env.AMCTL_SERVER ?? DEFAULT_SERVER);
}

let tokenFile: string | undefined;

/** Set by the global `--token-file` option. */
export function useTokenFile(file: string | undefined): void {
  tokenFile = file;
}

function credential(): string | undefined {
  if (tokenFile !== undefined) {
    try {
      return readFileSync(tokenFile, "utf8").trim();
    } catch (error) {
      throw new Error(`cannot read --token-file ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? "error"}`);
    }
  }
  return process.env.AMCTL_TOKEN?.trim() || undefined;
}

/** A client of `service` over the Connect protocol on HTTP/2 (cleartext, prior knowledge), so streams work. */
export function serviceClient<S extends DescService>(service: S, server: string): Client<S> {
  const token = credential();
  return createClient(service, createConnectTransport({ baseUrl: server, httpVersion: "2", interceptors: token ? [bearerInterceptor(token)] : [] }));
}

export function operationClient(server: string): Client<typeof OperationService> {
  return serviceClient(OperationService, server);
}
