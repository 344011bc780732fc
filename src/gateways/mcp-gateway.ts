// The MCP gateway: `POST /mcp` on the server's port, over HTTP/1.1 or HTTP/2, MCP's streamable
// HTTP transport in its stateless form (each POST is answered on its own, as JSON or a
// server-sent-event stream; there is no session and no standalone GET stream, which the
// specification allows). The
// caller is a running execution, authenticated by its own credential (`Authorization: Bearer
// $AMCTL_TOKEN`) the way every RPC is. It sees, as tools of one MCP server:
//
//   tools/list  the tools of every declared upstream (mcp-upstreams.ts; the declarations as they
//               are at this request, mcp-upstream-declarations.ts) that its profile
//               grants and its delegation's scope covers, named `server__tool` (mcp-tool-names.ts);
//   tools/call  forwarded once governToolCall (mcp-tool-call.ts) allows and charges it; a
//               refusal is a tool result with isError set, whose text names the rule.
//
// A call in flight ends at once when the caller's delegation (or an ancestor) or the grant it
// was allowed under is revoked (call-revocations.ts), and the caller's stream with it; and when
// its upstream is replaced or removed (mcp-upstream-clients.ts), as a tool error saying so.
import type { JsonObject } from "@bufbuild/protobuf";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { CallToolRequestSchema, ListToolsRequestSchema, McpError, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "../api/logger.js";
import type { Authority, Principal } from "../governance/authority.js";
import { bearerToken } from "../governance/bearer.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import { requireCall } from "../governance/scope.js";
import { create } from "@bufbuild/protobuf";
import { CallRevocations } from "./call-revocations.js";
import { exposedName, grantName, parseExposedName, type UpstreamTool } from "./mcp-tool-names.js";
import { governToolCall, type ToolCallDeps } from "./mcp-tool-call.js";
import { UpstreamUnavailable, UpstreamWithdrawn, type UpstreamClients } from "./mcp-upstream-clients.js";
import { attemptOfToken } from "./runtime-call.js";
import type { StoreEvents } from "../store/store.js";
import { sendJson, sendWebResponse, webRequestOf, type NodeRequest, type NodeResponse } from "./web-exchange.js";

export const MCP_PATH = "/mcp";

export interface McpGatewayDeps extends ToolCallDeps {
  store: ToolCallDeps["store"] & StoreEvents;
  authority: Authority;
  upstreams: UpstreamClients;
  log: Logger;
  version: string;
  /** Largest request body read. */
  maxBodyBytes: number;
}

/** A JSON-RPC error answered over plain HTTP (before any MCP session exists). */
function answerHttp(res: NodeResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { jsonrpc: "2.0", error: { code: -32000, message }, id: null }, headers);
}

function toolError(text: string): CallToolResult {
  return { content: [{ type: "text", text }], isError: true };
}

async function readBody(req: NodeRequest, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new RangeError(`the request is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

export function mcpGateway(deps: McpGatewayDeps) {
  const { authority, store, upstreams, log } = deps;
  const revocations = new CallRevocations(authority, deps.grants, store);

  /** Whether the caller may see `target` now: its scope covers it and its profile grants it. */
  async function visible(principal: Principal, operation: Operation, target: UpstreamTool): Promise<boolean> {
    const tool = grantName(target);
    try {
      requireCall(principal, operation.profile, create(RuntimeCallSchema, { kind: CallKind.TOOL, tool }));
    } catch {
      return false;
    }
    return deps.grants.toolGranted(operation.profile, tool);
  }

  async function listTools(principal: Principal, operation: Operation, signal: AbortSignal): Promise<Tool[]> {
    const listed: Tool[] = [];
    await upstreams.sync();
    for (const server of upstreams.names()) {
      let tools: Tool[];
      try {
        tools = await upstreams.tools(server, signal);
      } catch (error) {
        log.warn({ err: error, upstream: server }, "an upstream MCP server did not list its tools");
        continue;
      }
      for (const tool of tools) {
        if (await visible(principal, operation, { server, tool: tool.name })) listed.push({ ...tool, name: exposedName({ server, tool: tool.name }) });
      }
    }
    return listed;
  }

  async function callTool(principal: Principal, operation: Operation, name: string, args: JsonObject, signal: AbortSignal): Promise<CallToolResult> {
    const target = parseExposedName(name);
    if (target === undefined) return toolError(`refused: ${name} is not a tool name of this gateway (server__tool)`);
    let offered: Tool | undefined;
    await upstreams.sync();
    try {
      // A server nobody declared offers nothing; the call is still decided (and audited) like any other.
      if (upstreams.has(target.server)) offered = (await upstreams.tools(target.server, signal)).find((tool) => tool.name === target.tool);
    } catch (error) {
      log.warn({ err: error, upstream: target.server }, "an upstream MCP server did not list its tools");
      return toolError(`upstream MCP server ${target.server} is unavailable`);
    }
    const annotations = (offered?.annotations ?? {}) as JsonObject;
    const verdict = await governToolCall(deps, { principal, operation, target, arguments: args, annotations, exists: offered !== undefined });
    if (!verdict.allowed) return toolError(verdict.reason);
    const watch = revocations.watch(principal, { profile: operation.profile, tool: grantName(target) });
    try {
      return await upstreams.call(target.server, target.tool, args, AbortSignal.any([signal, watch.signal]));
    } catch (error) {
      if (watch.signal.aborted) return toolError(`ended: ${String(watch.signal.reason)}`);
      if (error instanceof UpstreamWithdrawn) return toolError(`ended: ${error.message}`);
      // The upstream's own JSON-RPC error is its answer, passed on; anything else is the gateway's
      // trouble reaching it, told without the details (an address) and logged.
      if (error instanceof McpError) throw error;
      log.warn({ err: error, upstream: target.server }, "a tool call to an upstream MCP server failed");
      return toolError(error instanceof UpstreamUnavailable ? error.message : `upstream MCP server ${target.server} failed to answer`);
    } finally {
      watch.dispose();
    }
  }

  /** One MCP server for one request of one authenticated caller. */
  function serverFor(principal: Principal, operation: Operation): Server {
    const server = new Server({ name: "amctl-mcp-gateway", version: deps.version }, { capabilities: { tools: {} } });
    server.setRequestHandler(ListToolsRequestSchema, async (_request, extra) => ({ tools: await listTools(principal, operation, extra.signal) }));
    server.setRequestHandler(CallToolRequestSchema, (request, extra) =>
      callTool(principal, operation, request.params.name, (request.params.arguments ?? {}) as JsonObject, extra.signal),
    );
    return server;
  }

  async function serve(req: NodeRequest, res: NodeResponse): Promise<void> {
    if (req.method !== "POST") {
      answerHttp(res, 405, "this MCP gateway is stateless: POST each JSON-RPC message to /mcp", { Allow: "POST" });
      return;
    }
    const token = bearerToken(req.headers.authorization ?? "");
    if (token === undefined) {
      answerHttp(res, 401, "the MCP gateway needs an execution credential: Authorization: Bearer $AMCTL_TOKEN", { "WWW-Authenticate": "Bearer" });
      return;
    }
    const attempt = await attemptOfToken(authority, store, token);
    if (attempt.refusal === "unauthenticated") {
      answerHttp(res, 401, attempt.error.rawMessage, { "WWW-Authenticate": 'Bearer error="invalid_token"' });
      return;
    }
    if (attempt.refusal === "not-an-attempt") {
      answerHttp(res, 403, "only a running execution's own credential may use this gateway");
      return;
    }
    let body: unknown;
    try {
      body = await readBody(req, deps.maxBodyBytes);
    } catch (error) {
      answerHttp(res, error instanceof RangeError ? 413 : 400, error instanceof RangeError ? error.message : "the request body is not JSON");
      return;
    }
    const server = serverFor(attempt.principal, attempt.operation);
    // The web-standard transport serves HTTP/1.1 and HTTP/2 alike (web-exchange.ts converts).
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    // A revocation ends the caller's calls (callTool answers them), then its stream.
    const watch = revocations.watch(attempt.principal);
    const closeStream = (): void => void transport.close().catch(() => undefined);
    watch.signal.addEventListener("abort", () => setTimeout(closeStream, 100).unref(), { once: true });
    res.once("close", () => {
      watch.dispose();
      closeStream();
      void server.close().catch(() => undefined);
    });
    await server.connect(transport);
    await sendWebResponse(await transport.handleRequest(webRequestOf(req), { parsedBody: body }), res);
  }

  return {
    handle(req: NodeRequest, res: NodeResponse): void {
      serve(req, res).catch((error: unknown) => {
        log.error({ err: error }, "the MCP gateway failed");
        if (!res.headersSent) answerHttp(res, 500, "the MCP gateway failed; see the server log");
        else res.destroy();
      });
    },
    close: () => upstreams.close(),
  };
}

/** Whether a request is for the MCP gateway. */
export function isMcpRequest(url: string | undefined): boolean {
  const path = (url ?? "").split("?")[0];
  return path === MCP_PATH;
}
