// Upstream MCP servers put through one replica are used by another on the same PostgreSQL
// store: the gateway reads the store's version of the declarations at each call, so a put via A
// is offered at B's next tools/list, and a delete via A ends B's call in flight to the upstream
// within B's heartbeat (and B's next call sees it at once).
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { afterAll, expect, it } from "vitest";
import type { ServerConfig } from "../../src/config/config.js";
import { McpUpstreamService } from "../../src/gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { bearer } from "../helpers/auth.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { gatewayClient, resultText, startHttpUpstream } from "../helpers/mcp.js";
import { startReplicas, stoppedAfterEach } from "../helpers/replicas.js";
import { applyGrant, createProfileWith, roomyBudget, startCredentialed, wideRoot } from "../helpers/runtime.js";

const { database } = clusterForFile();
const started = stoppedAfterEach();
const clients: Client[] = [];
const config: Partial<ServerConfig> = { runnerHeartbeatMs: 300 };

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
});

it("an upstream put via replica A is used via replica B at once, and a delete via A ends B's call in flight", async () => {
  const upstream = await startHttpUpstream("shared");
  try {
    const [a, b] = await startReplicas(await database("mcp-upstreams"), 2, config);
    started.push(a!, b!);
    const operatorA = createClient(McpUpstreamService, createGrpcTransport({ baseUrl: a!.url, interceptors: [bearer(a!.token)] }));
    const root = await wideRoot(a!.url, a!.dataDir);
    const profile = await createProfileWith(root.operations, "replicated", ProfileType.PERSONAL);
    await applyGrant(root.operations, profile, "shared/*");
    const exec = await startCredentialed(a!.url, a!.dataDir, root.operations, profile, roomyBudget());
    const viaB = await gatewayClient(b!.url, exec.token);
    clients.push(viaB);
    // B has read the declarations (none) before the put.
    expect((await viaB.listTools()).tools).toEqual([]);

    await operatorA.putMcpUpstream({ upstream: { name: "shared", transport: { case: "http", value: { url: upstream.url } } } });
    expect((await viaB.listTools()).tools.map((tool) => tool.name)).toContain("shared__echo");
    expect(resultText(await viaB.callTool({ name: "shared__echo", arguments: { text: "via b" } }))).toBe("shared: via b");

    const slow = viaB.callTool({ name: "shared__slow", arguments: { ms: 30_000 } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const deletedAt = Date.now();
    await operatorA.deleteMcpUpstream({ name: "shared" });
    const ended = await slow;
    expect(ended.isError).toBe(true);
    expect(resultText(ended)).toBe("ended: upstream MCP server shared was removed");
    expect(Date.now() - deletedAt).toBeLessThan(5_000);
    expect((await viaB.listTools()).tools).toEqual([]);
  } finally {
    await upstream.close();
  }
}, 120_000);
