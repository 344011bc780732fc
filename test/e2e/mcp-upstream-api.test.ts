// Upstream MCP servers declared through McpUpstreamService, end to end over real sockets and a
// real store: a put takes effect at the gateway's next tools/list or tools/call, no restart; a
// replace or delete ends the calls in flight to the upstream with a tool error; declarations
// survive a restart; names the --mcp-upstreams file declares stay the file's; bad declarations
// are InvalidArgument naming the field and store nothing; only a root delegation may put,
// delete or list (a child with the widest scope and an execution credential are refused); the
// CLI round-trips.
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient, type Client as RpcClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { type McpUpstreamSchema, McpUpstreamService, McpUpstreamSource } from "../../src/gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { BadRequestSchema, PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { bearer, fullScope } from "../helpers/auth.js";
import { amctl } from "../helpers/cli.js";
import { gatewayClient, resultText, startHttpUpstream, UPSTREAM_SCRIPT } from "../helpers/mcp.js";
import {
  agentOperationTypes,
  applyGrant,
  clientsFor,
  createProfileWith,
  errorInfo,
  refusal,
  roomyBudget,
  startCredentialed,
  wideRoot,
  type Clients,
} from "../helpers/runtime.js";
import { startTestServer, tempDir, type TestServer } from "../helpers/server.js";

type UpstreamInit = MessageInitShape<typeof McpUpstreamSchema>;
type UpstreamsClient = RpcClient<typeof McpUpstreamService>;

let notesA: Awaited<ReturnType<typeof startHttpUpstream>>;
let notesB: Awaited<ReturnType<typeof startHttpUpstream>>;
/** The --mcp-upstreams file, which declares `fixed`. */
let file: string;
let server: TestServer;
let root: Clients;
/** The operator: the server's root credential. */
let operator: UpstreamsClient;
let profile: string;
const clients: Client[] = [];

function upstreamsClient(url: string, token: string): UpstreamsClient {
  return createClient(McpUpstreamService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] }));
}

const http = (name: string, url: string): UpstreamInit => ({ name, transport: { case: "http", value: { url } } });
/** A stdio upstream; `label` (its answers' prefix) also marks its process in /proc. */
const stdio = (name: string, label = "stdio-upstream"): UpstreamInit => ({
  name,
  transport: { case: "stdio", value: { command: [process.execPath, UPSTREAM_SCRIPT, "stdio", label] } },
});

/** How many processes run with `marker` among their arguments (a sandbox's PID namespace hides nothing from /proc here). */
function processesMarked(marker: string): number {
  let count = 0;
  for (const pid of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(marker)) count += 1;
    } catch {
      // It ended meanwhile.
    }
  }
  return count;
}

/** An MCP client of the gateway for a fresh running execution whose delegation covers every tool. */
async function agentMcp(): Promise<{ mcp: Client; token: string }> {
  const { token } = await root.delegations.issueDelegation({
    subject: "mcp-agent",
    scope: { operationTypes: agentOperationTypes, profiles: ["*"], tools: ["*"], budget: roomyBudget() },
  });
  const exec = await startCredentialed(server.url, server.dataDir, clientsFor(server.url, token).operations, profile, roomyBudget());
  const mcp = await gatewayClient(server.url, exec.token);
  clients.push(mcp);
  return { mcp, token: exec.token };
}

async function toolNames(mcp: Client): Promise<string[]> {
  return (await mcp.listTools()).tools.map((tool) => tool.name).sort();
}

async function names(): Promise<string[]> {
  return (await operator.listMcpUpstreams({})).upstreams.map((upstream) => upstream.name);
}

async function auditResources(commandRef: string): Promise<string[]> {
  const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
  const { records } = await audit.listAuditRecords({ pageSize: 1000 });
  return records.filter((record) => record.commandRef === commandRef).map((record) => `${record.decision?.allowed} ${record.resource}`);
}

beforeAll(async () => {
  notesA = await startHttpUpstream("notes-a");
  notesB = await startHttpUpstream("notes-b");
  file = join(tempDir(), "mcp-upstreams.yaml");
  writeFileSync(file, `servers:\n  - name: fixed\n    url: ${notesA.url}\n`);
  server = await startTestServer({ maxConcurrentExecutions: 16, mcpUpstreams: file });
  root = await wideRoot(server.url, server.dataDir);
  operator = upstreamsClient(server.url, server.token);
  profile = await createProfileWith(root.operations, "mcp-api", ProfileType.PERSONAL);
  for (const tool of ["fixed/*", "live/*", "swap/*", "gone/*", "cmd/*", "cli/*"]) await applyGrant(root.operations, profile, tool);
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
  await server?.close();
  await notesA?.close();
  await notesB?.close();
});

describe("live declarations", () => {
  it("a put HTTP upstream's tools are listed and called through /mcp at once, without a restart, and the put is audited", async () => {
    const { mcp } = await agentMcp();
    expect(await toolNames(mcp)).not.toContain("live__echo");
    const put = await operator.putMcpUpstream({ upstream: http("live", notesA.url) });
    expect(put.created).toBe(true);
    expect(put.upstream).toMatchObject({ name: "live", source: McpUpstreamSource.API });
    expect(put.upstream?.updateTime).toBeDefined();
    expect(await toolNames(mcp)).toEqual(expect.arrayContaining(["live__echo", "live__slow"]));
    expect(resultText(await mcp.callTool({ name: "live__echo", arguments: { text: "hi" } }))).toBe("notes-a: hi");
    expect(await auditResources("PutMcpUpstream")).toContain("true mcp-upstreams/live");
    await operator.deleteMcpUpstream({ name: "live" });
    expect(await auditResources("DeleteMcpUpstream")).toContain("true mcp-upstreams/live");
  });

  it("a put stdio upstream runs in its sandbox and answers", async () => {
    await operator.putMcpUpstream({ upstream: stdio("cmd") });
    const { mcp } = await agentMcp();
    expect(await toolNames(mcp)).toContain("cmd__echo");
    expect(resultText(await mcp.callTool({ name: "cmd__echo", arguments: { text: "hello" } }))).toBe("stdio-upstream: hello");
    await operator.deleteMcpUpstream({ name: "cmd" });
  });

  it("replacing an upstream ends a call in flight to it with a tool error, and the next call uses the new declaration", async () => {
    await operator.putMcpUpstream({ upstream: http("swap", notesA.url) });
    const { mcp } = await agentMcp();
    const started = Date.now();
    const slow = mcp.callTool({ name: "swap__slow", arguments: { ms: 30_000 } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const replaced = await operator.putMcpUpstream({ upstream: http("swap", notesB.url) });
    expect(replaced.created).toBe(false);
    const ended = await slow;
    expect(ended.isError).toBe(true);
    expect(resultText(ended)).toBe("ended: upstream MCP server swap was replaced");
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(resultText(await mcp.callTool({ name: "swap__echo", arguments: { text: "again" } }))).toBe("notes-b: again");
    await operator.deleteMcpUpstream({ name: "swap" });
  });

  it("deleting an upstream removes its tools, ends a call in flight to it and stops its sandbox", async () => {
    const marker = `gone-${randomUUID()}`;
    await operator.putMcpUpstream({ upstream: stdio("gone", marker) });
    const { mcp } = await agentMcp();
    expect(await toolNames(mcp)).toContain("gone__slow");
    const slow = mcp.callTool({ name: "gone__slow", arguments: { ms: 30_000 } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(processesMarked(marker)).toBeGreaterThan(0);
    expect((await operator.deleteMcpUpstream({ name: "gone" })).upstream?.name).toBe("gone");
    const ended = await slow;
    expect(ended.isError).toBe(true);
    expect(resultText(ended)).toBe("ended: upstream MCP server gone was removed");
    await expect.poll(() => processesMarked(marker), { timeout: 5_000 }).toBe(0);
    expect((await toolNames(mcp)).filter((name) => name.startsWith("gone__"))).toEqual([]);
    const after = await mcp.callTool({ name: "gone__echo", arguments: { text: "x" } });
    expect(after.isError).toBe(true);
    const missing = await refusal(operator.deleteMcpUpstream({ name: "gone" }));
    expect(missing.code).toBe(Code.NotFound);
  });
});

describe("the file and the API", () => {
  it("lists the file's upstreams with source FILE, and refuses to put or delete a name the file declares, naming the file", async () => {
    const listed = (await operator.listMcpUpstreams({})).upstreams.find((upstream) => upstream.name === "fixed");
    expect(listed).toMatchObject({ source: McpUpstreamSource.FILE, transport: { case: "http", value: { url: notesA.url } } });
    for (const attempt of [() => operator.putMcpUpstream({ upstream: http("fixed", notesB.url) }), () => operator.deleteMcpUpstream({ name: "fixed" })]) {
      const error = await refusal(attempt());
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toContain(file);
      expect(error.findDetails(PreconditionFailureSchema)[0]?.violations[0]?.type).toBe("MCP_UPSTREAM_IN_FILE");
    }
    const { mcp } = await agentMcp();
    expect(resultText(await mcp.callTool({ name: "fixed__echo", arguments: { text: "still" } }))).toBe("notes-a: still");
  });

  it("pages the file's and the API's upstreams together, by name", async () => {
    for (const name of ["p-1", "p-3", "z-9"]) await operator.putMcpUpstream({ upstream: http(name, notesB.url) });
    const seen: string[] = [];
    for (let pageToken = ""; ; ) {
      const page = await operator.listMcpUpstreams({ pageSize: 1, pageToken });
      seen.push(...page.upstreams.map((upstream) => upstream.name));
      pageToken = page.nextPageToken;
      if (pageToken === "") break;
    }
    expect(seen).toEqual(["fixed", "p-1", "p-3", "z-9"]);
    for (const name of ["p-1", "p-3", "z-9"]) await operator.deleteMcpUpstream({ name });
  });
});

describe("bad declarations", () => {
  it.each<[string, UpstreamInit, string]>([
    ["a name with _", http("notes_1", "http://127.0.0.1:9/mcp"), "upstream.name"],
    ["an upper-case name", http("Notes", "http://127.0.0.1:9/mcp"), "upstream.name"],
    ["neither transport", { name: "none" }, "upstream"],
    ["a file URL", http("bad-url", "file:///etc/passwd"), "upstream.http.url"],
    ["an empty URL", http("bad-url", ""), "upstream.http.url"],
    ["an empty command", { name: "no-cmd", transport: { case: "stdio", value: { command: [] } } }, "upstream.stdio.command"],
    ["an empty argument", { name: "empty-arg", transport: { case: "stdio", value: { command: ["/bin/true", ""] } } }, "upstream.stdio.command"],
    [
      "an egress entry without a port",
      { name: "no-port", transport: { case: "stdio", value: { command: ["x"], egress: ["a:443", "example.com"] } } },
      "upstream.stdio.egress[1]",
    ],
    ["a wildcard egress entry", { name: "wild", transport: { case: "stdio", value: { command: ["x"], egress: ["*:443"] } } }, "upstream.stdio.egress[0]"],
  ])("refuses %s as InvalidArgument naming the field, and stores nothing", async (_what, upstream, field) => {
    const before = await names();
    const error = await refusal(operator.putMcpUpstream({ upstream }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe(field);
    expect(await names()).toEqual(before);
  });

  it("refuses a request without a declaration or with an over-long name by its protovalidate rules", async () => {
    expect((await refusal(operator.putMcpUpstream({}))).code).toBe(Code.InvalidArgument);
    expect((await refusal(operator.putMcpUpstream({ upstream: http("a".repeat(64), notesA.url) }))).code).toBe(Code.InvalidArgument);
  });
});

describe("attacks: only the operator's root delegation declares upstreams", () => {
  it("refuses a child delegation with the widest scope and an execution credential Put, Delete and List, records the denials, and changes nothing", async () => {
    await operator.putMcpUpstream({ upstream: http("victim", notesA.url) });
    const { token: child } = await root.delegations.issueDelegation({ subject: "widest-child", scope: fullScope });
    const { token: execution } = await agentMcp();
    for (const token of [child!, execution]) {
      const attacker = upstreamsClient(server.url, token);
      for (const attempt of [
        () => attacker.putMcpUpstream({ upstream: stdio("victim") }),
        () => attacker.putMcpUpstream({ upstream: stdio("planted") }),
        () => attacker.deleteMcpUpstream({ name: "victim" }),
        () => attacker.listMcpUpstreams({}),
      ]) {
        const error = await refusal(attempt());
        expect(error.code).toBe(Code.PermissionDenied);
        expect(errorInfo(error)).toMatchObject({ reason: "OUT_OF_SCOPE", metadata: { axis: "mcp_upstreams" } });
        // The refusal tells nothing of what is declared.
        expect(error.rawMessage).not.toContain(notesA.url);
      }
    }
    const victim = (await operator.listMcpUpstreams({})).upstreams.find((upstream) => upstream.name === "victim");
    expect(victim?.transport).toMatchObject({ case: "http", value: { url: notesA.url } });
    expect(await names()).not.toContain("planted");
    expect((await auditResources("PutMcpUpstream")).filter((entry) => entry.startsWith("false"))).toHaveLength(4);
    expect((await auditResources("DeleteMcpUpstream")).filter((entry) => entry.startsWith("false"))).toHaveLength(2);
    await operator.deleteMcpUpstream({ name: "victim" });
  });
});

describe("durability", () => {
  it("keeps the declarations across a restart, and the gateway uses them at once", async () => {
    const restarted = await startTestServer({ maxConcurrentExecutions: 4 });
    const dataDir = restarted.dataDir;
    await upstreamsClient(restarted.url, restarted.token).putMcpUpstream({ upstream: http("kept", notesB.url) });
    await restarted.close();
    const again = await startTestServer({ dataDir, maxConcurrentExecutions: 4 });
    try {
      const listed = (await upstreamsClient(again.url, again.token).listMcpUpstreams({})).upstreams;
      expect(listed.map((upstream) => [upstream.name, upstream.source])).toEqual([["kept", McpUpstreamSource.API]]);
      const owner = await wideRoot(again.url, again.dataDir);
      const kept = await createProfileWith(owner.operations, "kept", ProfileType.PERSONAL);
      await applyGrant(owner.operations, kept, "kept/echo");
      const exec = await startCredentialed(again.url, again.dataDir, owner.operations, kept, roomyBudget());
      const mcp = await gatewayClient(again.url, exec.token);
      clients.push(mcp);
      expect(resultText(await mcp.callTool({ name: "kept__echo", arguments: { text: "after" } }))).toBe("notes-b: after");
    } finally {
      await again.close();
    }
  });
});

describe("amctl mcp-upstream", () => {
  it("puts the upstreams a file declares, lists them, and deletes one", async () => {
    const env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token };
    const declared = join(tempDir(), "put.yaml");
    writeFileSync(
      declared,
      `servers:\n  - name: cli\n    url: ${notesB.url}\n  - name: cli-cmd\n    command: [/usr/bin/node, server.mjs]\n    network:\n      egress: [API.example.com:443]\n`,
    );
    const put = await amctl(["mcp-upstream", "put", "--file", declared], env);
    expect(put.stderr).toBe("");
    expect(put.stdout.trim().split("\n")).toEqual(["declared cli", "declared cli-cmd"]);
    const list = await amctl(["mcp-upstream", "list"], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/cli\s+api\s+http\s+http:\/\/127\.0\.0\.1:\d+\/mcp/);
    expect(list.stdout).toMatch(/cli-cmd\s+api\s+stdio\s+\/usr\/bin\/node server\.mjs\s+api\.example\.com:443/);
    expect(list.stdout).toMatch(/fixed\s+file\s+http/);
    const { mcp } = await agentMcp();
    expect(resultText(await mcp.callTool({ name: "cli__echo", arguments: { text: "via cli" } }))).toBe("notes-b: via cli");
    expect((await amctl(["mcp-upstream", "delete", "cli"], env)).stdout.trim()).toBe("deleted cli");
    expect((await amctl(["mcp-upstream", "delete", "cli-cmd"], env)).code).toBe(0);
    expect(await names()).toEqual(["fixed"]);
    // A bad file is refused before anything is sent, naming the field as the file spells it.
    writeFileSync(declared, "servers:\n  - name: ok\n    url: http://127.0.0.1:9/mcp\n  - name: Bad\n    url: http://127.0.0.1:9/mcp\n");
    const bad = await amctl(["mcp-upstream", "put", "--file", declared], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("servers[1].name: must match");
    expect(await names()).toEqual(["fixed"]);
  });
});
