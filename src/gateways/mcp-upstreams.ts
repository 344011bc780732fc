// The MCP servers the gateway forwards to, as the operator declares them in a file
// (`amctl serve --mcp-upstreams FILE`, docs/mcp-gateway.md). A file rather than an RPC or a
// policy bundle: a stdio upstream is a command the server runs, which is the operator's
// authority and no delegation's (a delegation that may replace a profile type's bundle must not
// thereby choose what the server executes), and an upstream serves every profile alike, where a
// bundle is per profile type. Which caller may use which tool stays with delegations and grants.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { parseAuthority } from "./egress-proxy.js";
import type { EgressDestination } from "./mcp-upstream-egress.js";

/** An upstream's name: the prefix of its tools (`files__read`); no `_`, so the prefix ends at the first `__`. */
const UPSTREAM_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export type McpUpstream =
  | { name: string; transport: "http"; url: URL }
  /**
   * Run inside a sandbox of its own (src/sandbox/), with no network but the plane's port and,
   * when `egress` lists any, the plane's egress proxy, which lets it reach those and no others.
   */
  | { name: string; transport: "stdio"; command: string[]; egress: EgressDestination[] };

function invalid(file: string, where: string, what: string): Error {
  return new Error(`--mcp-upstreams ${file}: ${where}: ${what}`);
}

function upstreamOf(file: string, entry: unknown, index: number, seen: Set<string>): McpUpstream {
  const where = `servers[${index}]`;
  if (typeof entry !== "object" || entry === null) throw invalid(file, where, "is not a mapping");
  const { name, url, command, network, ...rest } = entry as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalid(file, `${where}.${unknown}`, "is not a field of an upstream (name, url, command, network)");
  if (typeof name !== "string" || !UPSTREAM_NAME.test(name)) throw invalid(file, `${where}.name`, "must match [a-z0-9][a-z0-9-]{0,62}");
  if (seen.has(name)) throw invalid(file, `${where}.name`, `${name} is declared twice`);
  seen.add(name);
  if ((url === undefined) === (command === undefined)) throw invalid(file, where, "needs exactly one of url (an HTTP upstream) or command (a stdio upstream)");
  if (url !== undefined) {
    const parsed = typeof url === "string" && URL.canParse(url) ? new URL(url) : undefined;
    if (parsed === undefined || (parsed.protocol !== "http:" && parsed.protocol !== "https:"))
      throw invalid(file, `${where}.url`, "must be an http or https URL");
    if (network !== undefined) throw invalid(file, `${where}.network`, "applies to a stdio upstream only");
    return { name, transport: "http", url: parsed };
  }
  if (!Array.isArray(command) || command.length === 0 || !command.every((arg) => typeof arg === "string" && arg !== "" && !arg.includes("\0"))) {
    throw invalid(file, `${where}.command`, "must be a non-empty list of non-empty strings (the program, then its arguments)");
  }
  return { name, transport: "stdio", command: command as string[], egress: egressOf(file, `${where}.network`, network) };
}

/** `network`: absent or `none` (no way out), or `{egress: [host:port, …]}` (those through the egress proxy). */
function egressOf(file: string, where: string, network: unknown): EgressDestination[] {
  if (network === undefined || network === "none") return [];
  const usage = "must be none, or {egress: [host:port, …]} (the destinations it may reach through the egress proxy)";
  if (typeof network !== "object" || network === null || Array.isArray(network)) throw invalid(file, where, usage);
  const { egress, ...rest } = network as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalid(file, `${where}.${unknown}`, "is not a field of a network profile (egress)");
  if (!Array.isArray(egress) || egress.length === 0) throw invalid(file, `${where}.egress`, "must be a non-empty list of host:port");
  return egress.map((entry, index) => {
    const destination = typeof entry === "string" ? parseAuthority(entry) : undefined;
    if (destination === undefined) throw invalid(file, `${where}.egress[${index}]`, "must be host:port (a DNS name or IP address, and a port 1-65535)");
    return destination;
  });
}

/** The upstreams declared in `file` (YAML or JSON: `servers: [{name, url | command}]`); throws naming the bad field. */
export function readMcpUpstreams(file: string): McpUpstream[] {
  const document: unknown = parse(readFileSync(file, "utf8"));
  const servers = (document as { servers?: unknown } | null)?.servers;
  if (!Array.isArray(servers)) throw invalid(file, "servers", "must be a list of upstream MCP servers");
  const seen = new Set<string>();
  return servers.map((entry, index) => upstreamOf(file, entry, index, seen));
}
