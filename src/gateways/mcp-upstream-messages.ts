// An upstream's declaration as McpUpstreamService carries it (the proto McpUpstream) and as the
// gateway uses it (mcp-upstreams.ts McpUpstream), both ways. A message is checked by the same
// rules as the file's entries (checkedUpstream), its fields named as a request spells them.
import { create } from "@bufbuild/protobuf";
import { McpUpstreamSchema, type McpUpstreamSource, type McpUpstream as McpUpstreamMessage } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { checkedUpstream, type DeclarationFields, type McpUpstream } from "./mcp-upstreams.js";

/** Where PutMcpUpstreamRequest keeps each field of the declaration. */
const REQUEST_FIELDS: DeclarationFields = {
  entry: "upstream",
  name: "upstream.name",
  url: "upstream.http.url",
  command: "upstream.stdio.command",
  egress: "upstream.stdio.egress",
};

/** The upstream `message` declares; UpstreamDeclarationInvalid naming the request's field when it breaks a rule. */
export function upstreamOfMessage(message: McpUpstreamMessage): McpUpstream {
  const { transport } = message;
  return checkedUpstream(
    {
      name: message.name,
      url: transport.case === "http" ? transport.value.url : undefined,
      command: transport.case === "stdio" ? transport.value.command : undefined,
      egress: transport.case === "stdio" ? transport.value.egress : undefined,
    },
    REQUEST_FIELDS,
  );
}

/** `host:port`, an IPv6 host in brackets: as an egress entry is written. */
function authority({ host, port }: { host: string; port: number }): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** `upstream` as a message (its output-only `source` set; `update_time` is the store's to set). */
export function messageOfUpstream(upstream: McpUpstream, source: McpUpstreamSource): McpUpstreamMessage {
  const { name } = upstream;
  return upstream.transport === "http"
    ? create(McpUpstreamSchema, { name, source, transport: { case: "http", value: { url: upstream.url.href } } })
    : create(McpUpstreamSchema, {
        name,
        source,
        transport: { case: "stdio", value: { command: [...upstream.command], egress: upstream.egress.map(authority) } },
      });
}
