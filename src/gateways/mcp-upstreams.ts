// The MCP servers the gateway forwards to, as the operator declares them: in a file
// (`amctl serve --mcp-upstreams FILE`, fixed for the server's life) or through
// McpUpstreamService (kept in the store). A declaration's rules are written once, here
// (checkedUpstream), and both sources go through them; each source only says where its fields
// are, so an error names the field as the operator wrote it. Declaring is the operator's
// authority and no delegation's: a stdio upstream is a command the server runs.
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

/** A declaration as its source gives it, before the rules are checked: absent fields are undefined. */
export interface UpstreamDeclaration {
  name: unknown;
  url?: unknown;
  command?: unknown;
  /** The stdio upstream's egress list; undefined for none. */
  egress?: unknown;
}

/** Where a source keeps each field of a declaration (`servers[0].url`, `upstream.http.url`); `entry` is the declaration itself. */
export type DeclarationFields = Record<"entry" | "name" | "url" | "command" | "egress", string>;

/** A declaration that breaks a rule: which field, and what the rule wants. */
export class UpstreamDeclarationInvalid extends Error {
  constructor(
    readonly field: string,
    readonly description: string,
  ) {
    super(`${field}: ${description}`);
  }
}

/** The upstream `declaration` declares, or UpstreamDeclarationInvalid naming the first field that breaks a rule. */
export function checkedUpstream(declaration: UpstreamDeclaration, fields: DeclarationFields): McpUpstream {
  const { name, url, command, egress } = declaration;
  const invalid = (field: keyof DeclarationFields, what: string) => new UpstreamDeclarationInvalid(fields[field], what);
  /** `upstream.http.url` → `http.url`: a field as the entry's own, for a message that names two of them. */
  const within = (field: "url" | "command") => fields[field].slice(fields.entry.length + 1);
  if (typeof name !== "string" || !UPSTREAM_NAME.test(name)) throw invalid("name", "must match [a-z0-9][a-z0-9-]{0,62}");
  if ((url === undefined) === (command === undefined)) {
    throw invalid("entry", `needs exactly one of ${within("url")} (an HTTP upstream) or ${within("command")} (a stdio upstream)`);
  }
  if (url !== undefined) {
    const parsed = typeof url === "string" && URL.canParse(url) ? new URL(url) : undefined;
    if (parsed === undefined || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) throw invalid("url", "must be an http or https URL");
    return { name, transport: "http", url: parsed };
  }
  if (!Array.isArray(command) || command.length === 0 || !command.every((arg) => typeof arg === "string" && arg !== "" && !arg.includes("\0"))) {
    throw invalid("command", "must be a non-empty list of non-empty strings (the program, then its arguments)");
  }
  return { name, transport: "stdio", command: command as string[], egress: egressOf(egress ?? [], fields.egress) };
}

function egressOf(egress: unknown, field: string): EgressDestination[] {
  if (!Array.isArray(egress)) throw new UpstreamDeclarationInvalid(field, "must be a list of host:port");
  return egress.map((entry, index) => {
    const destination = typeof entry === "string" ? parseAuthority(entry) : undefined;
    if (destination === undefined)
      throw new UpstreamDeclarationInvalid(`${field}[${index}]`, "must be host:port (a DNS name or IP address, and a port 1-65535)");
    return destination;
  });
}

/** Names the file as the operator gave it: `--mcp-upstreams FILE` to `amctl serve`, `--file FILE` to `amctl mcp-upstream put`. */
function invalid(file: string, where: string, what: string): Error {
  return new Error(`${file}: ${where}: ${what}`);
}

/** The file's entry as a declaration: what is particular to YAML (a mapping, its keys, `network`) is checked here, the rules by checkedUpstream. */
function declarationOf(file: string, entry: unknown, where: string): UpstreamDeclaration {
  if (typeof entry !== "object" || entry === null) throw invalid(file, where, "is not a mapping");
  const { name, url, command, network, ...rest } = entry as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalid(file, `${where}.${unknown}`, "is not a field of an upstream (name, url, command, network)");
  if (url !== undefined && command === undefined && network !== undefined) throw invalid(file, `${where}.network`, "applies to a stdio upstream only");
  return { name, url, command, egress: networkOf(file, `${where}.network`, network) };
}

/** `network`: absent or `none` (no way out), or `{egress: [host:port, …]}` (those through the egress proxy). */
function networkOf(file: string, where: string, network: unknown): unknown {
  if (network === undefined || network === "none") return undefined;
  const usage = "must be none, or {egress: [host:port, …]} (the destinations it may reach through the egress proxy)";
  if (typeof network !== "object" || network === null || Array.isArray(network)) throw invalid(file, where, usage);
  const { egress, ...rest } = network as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalid(file, `${where}.${unknown}`, "is not a field of a network profile (egress)");
  // In the file, `none` says "no egress": an empty list is a mistake.
  if (!Array.isArray(egress) || egress.length === 0) throw invalid(file, `${where}.egress`, "must be a non-empty list of host:port");
  return egress;
}

/** The fields of the file's `servers[index]`, as its YAML spells them. */
function fileFields(where: string): DeclarationFields {
  return { entry: where, name: `${where}.name`, url: `${where}.url`, command: `${where}.command`, egress: `${where}.network.egress` };
}

/**
 * The upstreams declared in `path` (YAML or JSON: `servers: [{name, url | command}]`); throws
 * naming the bad field, after `flag` (the option that gave the file).
 */
export function readMcpUpstreams(path: string, flag = "--mcp-upstreams"): McpUpstream[] {
  const file = `${flag} ${path}`;
  const document: unknown = parse(readFileSync(path, "utf8"));
  const servers = (document as { servers?: unknown } | null)?.servers;
  if (!Array.isArray(servers)) throw invalid(file, "servers", "must be a list of upstream MCP servers");
  const seen = new Set<string>();
  return servers.map((entry, index) => {
    const where = `servers[${index}]`;
    let upstream: McpUpstream;
    try {
      upstream = checkedUpstream(declarationOf(file, entry, where), fileFields(where));
    } catch (error) {
      throw error instanceof UpstreamDeclarationInvalid ? invalid(file, error.field, error.description) : error;
    }
    if (seen.has(upstream.name)) throw invalid(file, `${where}.name`, `${upstream.name} is declared twice`);
    seen.add(upstream.name);
    return upstream;
  });
}
