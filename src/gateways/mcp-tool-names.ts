// How the gateway names an upstream's tools. To an MCP client, `server__tool`: MCP's tool-name
// rule (SEP-986: letters, digits, `_`, `-`, `.`) and the model APIs' function-name rule
// (`^[a-zA-Z0-9_-]{1,64}$`, OpenAI and Anthropic) both accept it, where `/` is refused by the
// latter. In grants, delegations and policy input, `server/tool`, so that `server/*` covers an
// upstream's every tool (src/governance/attenuation.ts). Upstream names hold no `_`
// (mcp-upstreams.ts), so a name splits at its first `__`.
const SEPARATOR = "__";

export interface UpstreamTool {
  server: string;
  tool: string;
}

export function exposedName({ server, tool }: UpstreamTool): string {
  return `${server}${SEPARATOR}${tool}`;
}

/** The upstream tool an exposed name stands for, or undefined when it is no gateway name. */
export function parseExposedName(name: string): UpstreamTool | undefined {
  const at = name.indexOf(SEPARATOR);
  if (at <= 0 || at + SEPARATOR.length >= name.length) return undefined;
  return { server: name.slice(0, at), tool: name.slice(at + SEPARATOR.length) };
}

/** The name grants and delegations give the tool. */
export function grantName({ server, tool }: UpstreamTool): string {
  return `${server}/${tool}`;
}
