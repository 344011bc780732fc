// The gateway's client side: one MCP client per declared upstream, connected on first use and
// again after its connection is lost. The declarations may change while the server runs
// (mcp-upstream-declarations.ts): sync() takes up the current ones, and an upstream replaced or
// removed has its client closed (a stdio upstream's sandbox stopped) and the calls in flight to
// it ended with UpstreamWithdrawn. Upstreams know nothing of callers: the gateway decides,
// charges and audits before anything reaches them (mcp-tool-call.ts).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { CallToolResultSchema, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { PlaneAddress } from "../sandbox/plane-sockets.js";
import type { Sandboxes } from "../sandbox/sandbox.js";
import type { UpstreamDeclarations } from "./mcp-upstream-declarations.js";
import type { UpstreamEgress } from "./mcp-upstream-egress.js";
import type { McpUpstream } from "./mcp-upstreams.js";
import { SandboxedStdioTransport } from "./sandboxed-stdio.js";

/** The longest a forwarded tool call may run (the SDK's default of 60 s is short for tools). */
const TOOL_CALL_TIMEOUT_MS = 10 * 60_000;
/** Pages of an upstream's tools/list read at most: beyond this, its further tools are not offered. */
const MAX_TOOL_PAGES = 100;

export interface UpstreamClientsOptions {
  declarations: UpstreamDeclarations;
  /** Where stdio upstreams are confined; undefined when this server has no sandbox (they are then refused). */
  sandboxes: Sandboxes | undefined;
  /** Where stdio upstreams get their workspaces. */
  dir: string;
  /** The plane as the sandbox reaches it (the server's own address, known once it listens). */
  plane: () => PlaneAddress;
  /** Issues the egress credentials of stdio upstreams whose declaration lists destinations. */
  egressCredentials: UpstreamEgress;
  version: string;
}

export class UpstreamUnavailable extends Error {}

/** The reason a call in flight ended: its upstream was replaced or removed meanwhile. */
export class UpstreamWithdrawn extends Error {}

/** What makes two declarations of one name the same upstream. */
function identity(upstream: McpUpstream): string {
  return JSON.stringify(upstream.transport === "http" ? [upstream.url.href] : [upstream.command, upstream.egress]);
}

export class UpstreamClients {
  private readonly connected = new Map<string, Promise<Client>>();
  /** Per upstream, what its calls in flight listen on: aborted when it is withdrawn. */
  private readonly inFlight = new Map<string, AbortController>();
  private byName: ReadonlyMap<string, McpUpstream> = new Map();

  constructor(private readonly options: UpstreamClientsOptions) {}

  /** Takes up the current declarations: upstreams replaced or removed since are closed, their calls in flight ended. */
  async sync(): Promise<void> {
    const declared = await this.options.declarations.now();
    if (declared === this.byName) return;
    const previous = this.byName;
    this.byName = declared;
    for (const [name, upstream] of previous) {
      const now = declared.get(name);
      if (now === undefined) this.withdraw(name, `upstream MCP server ${name} was removed`);
      else if (identity(now) !== identity(upstream)) this.withdraw(name, `upstream MCP server ${name} was replaced`);
    }
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Every tool `name` offers now, across its pages. */
  async tools(name: string, signal?: AbortSignal): Promise<Tool[]> {
    const client = await this.client(name);
    const tools: Tool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_TOOL_PAGES; page++) {
      const answer = await client.listTools(cursor === undefined ? {} : { cursor }, signal ? { signal } : {});
      tools.push(...answer.tools);
      cursor = answer.nextCursor;
      if (cursor === undefined) break;
    }
    return tools;
  }

  /**
   * Forwards a call as it is (the upstream's result is passed back unchanged, not validated here).
   * Rejects with UpstreamWithdrawn when the upstream is replaced or removed before it answers.
   */
  async call(name: string, tool: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallToolResult> {
    let withdrawn = this.inFlight.get(name);
    if (withdrawn === undefined) this.inFlight.set(name, (withdrawn = new AbortController()));
    const client = await this.client(name);
    withdrawn.signal.throwIfAborted();
    try {
      return await client.request({ method: "tools/call", params: { name: tool, arguments: args } }, CallToolResultSchema, {
        signal: AbortSignal.any([signal, withdrawn.signal]),
        timeout: TOOL_CALL_TIMEOUT_MS,
      });
    } catch (error) {
      // The SDK wraps an abort's reason in an McpError: the withdrawal is told as such.
      if (withdrawn.signal.aborted) throw withdrawn.signal.reason;
      throw error;
    }
  }

  async close(): Promise<void> {
    const clients = [...this.connected.values()];
    this.connected.clear();
    await Promise.all(clients.map((client) => client.then((c) => c.close()).catch(() => undefined)));
  }

  /** Ends the calls in flight to `name` (the caller's stream is told why), then closes its client. */
  private withdraw(name: string, why: string): void {
    this.inFlight.get(name)?.abort(new UpstreamWithdrawn(why));
    this.inFlight.delete(name);
    const client = this.connected.get(name);
    this.connected.delete(name);
    void client?.then((c) => c.close()).catch(() => undefined);
  }

  private client(name: string): Promise<Client> {
    const existing = this.connected.get(name);
    if (existing !== undefined) return existing;
    // Lost: forgotten, unless it was already replaced by a newer connection of the name.
    const connecting = this.connect(name, () => {
      if (this.connected.get(name) === connecting) this.connected.delete(name);
    });
    this.connected.set(name, connecting);
    // A failed connection is not kept: the next use tries again.
    connecting.catch(() => {
      if (this.connected.get(name) === connecting) this.connected.delete(name);
    });
    return connecting;
  }

  private async connect(name: string, lost: () => void): Promise<Client> {
    const upstream = this.byName.get(name);
    if (upstream === undefined) throw new UpstreamUnavailable(`no upstream MCP server is named ${name}`);
    const client = new Client({ name: "amctl-mcp-gateway", version: this.options.version });
    const transport = this.transport(upstream);
    client.onclose = lost;
    try {
      await client.connect(transport);
    } catch (error) {
      await client.close().catch(() => undefined);
      // The cause (which may name the upstream's address) is for the server's log, not the caller.
      throw new UpstreamUnavailable(`upstream MCP server ${name} is unavailable`, { cause: error });
    }
    return client;
  }

  private transport(upstream: McpUpstream): Transport {
    if (upstream.transport === "http") return new StreamableHTTPClientTransport(upstream.url);
    const { sandboxes } = this.options;
    if (sandboxes === undefined) {
      throw new UpstreamUnavailable(`upstream MCP server ${upstream.name} is a command, and this server has no sandbox to run it in (--unsafe-no-sandbox)`);
    }
    return new SandboxedStdioTransport({
      sandboxes,
      name: upstream.name,
      dir: this.options.dir,
      command: upstream.command,
      plane: this.options.plane(),
      egress: upstream.egress,
      credentials: this.options.egressCredentials,
    });
  }
}
