// MCP on both sides of the gateway's tests: a real upstream (examples/mcp/upstream-server.mjs)
// served over streamable HTTP on a real socket, and an SDK client of the gateway's /mcp that
// sends an execution's credential.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { repoRoot } from "./temp-dir.js";

export const UPSTREAM_SCRIPT = join(repoRoot, "examples/mcp/upstream-server.mjs");

/** Serves a fresh upstream per request (stateless) at `http://127.0.0.1:PORT/mcp`. */
export async function startHttpUpstream(label: string): Promise<{ url: string; close: () => Promise<void> }> {
  const { buildUpstream } = (await import(UPSTREAM_SCRIPT)) as {
    buildUpstream: (label: string) => { connect(t: unknown): Promise<void>; close(): Promise<void> };
  };
  const server: Server = createServer((req, res) => {
    const upstream = buildUpstream(label);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => void upstream.close());
    void upstream.connect(transport).then(() => transport.handleRequest(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** An MCP client of the gateway at `baseUrl`/mcp, authenticated with `token`. */
export async function gatewayClient(baseUrl: string, token: string): Promise<Client> {
  const client = new Client({ name: "gateway-test", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL("/mcp", baseUrl), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
  return client;
}

/** The text of a tool result's first content block. */
export function resultText(result: object): string {
  return ("content" in result ? (result.content as { text?: string }[]) : [])[0]?.text ?? "";
}
