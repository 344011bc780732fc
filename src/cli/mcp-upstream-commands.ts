// `amctl mcp-upstream put | list | delete`: the operator's upstream MCP servers, declared through
// McpUpstreamService (a root delegation's calls only). `put --file` reads the format of
// `amctl serve --mcp-upstreams` and checks it by the same rules before anything is sent.
import { create } from "@bufbuild/protobuf";
import type { Command } from "commander";
import {
  DeleteMcpUpstreamResponseSchema,
  ListMcpUpstreamsResponseSchema,
  McpUpstreamService,
  McpUpstreamSource,
  PutMcpUpstreamResponseSchema,
  type McpUpstream,
} from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { messageOfUpstream } from "../gateways/mcp-upstream-messages.js";
import { readMcpUpstreams } from "../gateways/mcp-upstreams.js";
import { allPages, MAX_PAGE_SIZE } from "../model/all-pages.js";
import { serverOption, serviceClient } from "./client.js";
import { formatTable, jsonLine, timeText } from "./format.js";

interface Common {
  server: string;
  json?: boolean;
}

const SOURCES = new Map([
  [McpUpstreamSource.API, "api"],
  [McpUpstreamSource.FILE, "file"],
]);

/** What the gateway reaches: the URL, or the command line and its egress list. */
function targetText(upstream: McpUpstream): [transport: string, target: string, egress: string] {
  const { transport } = upstream;
  if (transport.case === "http") return ["http", transport.value.url, ""];
  if (transport.case === "stdio") return ["stdio", transport.value.command.join(" "), transport.value.egress.join(",") || "none"];
  return ["", "", ""];
}

function formatUpstreamTable(upstreams: readonly McpUpstream[]): string {
  return formatTable(
    ["NAME", "SOURCE", "TRANSPORT", "TARGET", "EGRESS", "UPDATED"],
    upstreams.map((upstream) => [upstream.name, SOURCES.get(upstream.source) ?? "", ...targetText(upstream), timeText(upstream.updateTime)]),
  );
}

export function registerMcpUpstreamCommands(program: Command): void {
  const upstreams = program
    .command("mcp-upstream")
    .description("The upstream MCP servers the MCP gateway (/mcp) forwards to (docs/mcp-gateway.md). A root delegation's only.");

  upstreams
    .command("put")
    .description(
      "Declare (or replace, by name) every upstream FILE lists; they take effect at once, no restart. FILE has the format of amctl serve --mcp-upstreams.",
    )
    .requiredOption("--file <file>", "YAML or JSON: servers: [{name, url | command, network}]")
    .addOption(serverOption())
    .option("--json", "print each PutMcpUpstreamResponse as proto JSON")
    .action(async (options: Common & { file: string }) => {
      const declared = readMcpUpstreams(options.file, "--file");
      const client = serviceClient(McpUpstreamService, options.server);
      for (const upstream of declared) {
        const response = await client.putMcpUpstream({ upstream: messageOfUpstream(upstream, McpUpstreamSource.UNSPECIFIED) });
        console.log(options.json ? jsonLine(PutMcpUpstreamResponseSchema, response) : `${response.created ? "declared" : "replaced"} ${upstream.name}`);
      }
    });

  upstreams
    .command("list")
    .description("Every declared upstream, the --mcp-upstreams file's and the API's, by name.")
    .addOption(serverOption())
    .option("--json", "print the ListMcpUpstreamsResponse as proto JSON")
    .action(async (options: Common) => {
      const client = serviceClient(McpUpstreamService, options.server);
      const response = create(ListMcpUpstreamsResponseSchema);
      for await (const page of allPages((pageToken) => client.listMcpUpstreams({ pageSize: MAX_PAGE_SIZE, pageToken })))
        response.upstreams.push(...page.upstreams);
      console.log(options.json ? jsonLine(ListMcpUpstreamsResponseSchema, response) : formatUpstreamTable(response.upstreams));
    });

  upstreams
    .command("delete")
    .description("Remove an upstream declared through the API: its tools are offered no more, and calls to it in flight end.")
    .argument("<name>", "the upstream's name (the prefix of its tools)")
    .addOption(serverOption())
    .option("--json", "print the DeleteMcpUpstreamResponse as proto JSON")
    .action(async (name: string, options: Common) => {
      const response = await serviceClient(McpUpstreamService, options.server).deleteMcpUpstream({ name });
      console.log(options.json ? jsonLine(DeleteMcpUpstreamResponseSchema, response) : `deleted ${name}`);
    });
}
