// The MCP gateway end to end: real MCP clients (@modelcontextprotocol/sdk) with executions'
// credentials against /mcp on a real server and store, forwarding to real upstream MCP servers
// built with the same SDK, one over HTTP and one over stdio run in a sandbox. Covered: each
// delegation lists only what its scope and its profile's grants allow; calls are decided by
// scope, grant and the toolGrant gate (arguments and annotations in the CEL input), charged
// exactly against connectorCalls, refused as MCP tool errors that name the rule, and audited
// with a digest of their arguments only; revocations end calls in flight; a sandboxed
// execution reaches the gateway through AMCTL_SERVER; guessed names and other credentials fail.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { bearer } from "../helpers/auth.js";
import { canonicalJsonText } from "../../src/model/audit-chain.js";
import { proxyConnectStatus } from "../helpers/egress-proxy.js";
import { gatewayClient, resultText, startHttpUpstream, UPSTREAM_SCRIPT } from "../helpers/mcp.js";
import { execution, requestId, waitForEnd } from "../helpers/operations.js";
import { bundleSource, policyAdmin, policyClient } from "../helpers/policy.js";
import {
  agentOperationTypes,
  applyGrant,
  cancelAndWait,
  clientsFor,
  createProfileWith,
  roomyBudget,
  startCredentialed,
  wideRoot,
  workspaceOf,
} from "../helpers/runtime.js";
import type { BudgetInit, Clients, RunningExecution } from "../helpers/runtime.js";
import { repoRoot, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

/** The HTTP upstream `notes`; `local` is the same server over stdio, run by the gateway in a sandbox. */
let upstream: Awaited<ReturnType<typeof startHttpUpstream>>;
let server: TestServer;
let root: Clients;
/** The personal profile the grants are applied in and every execution runs in. */
let profile: string;
/** Destinations that greet whoever connects: `reach` may reach the first, not the second. */
let listed: TcpServer;
let unlisted: TcpServer;
/** Every MCP client a test opened, closed at the end. */
const clients: Client[] = [];

/** An agent whose delegation covers `tools`, and a running execution of it with its credential. */
async function agentRunning(tools: string[], budget: BudgetInit = {}): Promise<{ agent: Clients; delegation: string; exec: RunningExecution }> {
  const { delegation, token } = await root.delegations.issueDelegation({
    subject: `agent-${tools.join("+")}`,
    scope: { operationTypes: agentOperationTypes, profiles: ["*"], tools, modelProviders: ["*"], budget: roomyBudget() },
  });
  const agent = clientsFor(server.url, token);
  const exec = await startCredentialed(server.url, server.dataDir, agent.operations, profile, roomyBudget(budget));
  return { agent, delegation: delegation!.name, exec };
}

async function mcpOf(exec: RunningExecution): Promise<Client> {
  const client = await gatewayClient(server.url, exec.token);
  clients.push(client);
  return client;
}

async function greeter(name: string): Promise<TcpServer> {
  const greeting = createTcpServer((socket) => socket.end(`hello from ${name}\n`));
  await new Promise<void>((resolve) => greeting.listen(0, "127.0.0.1", resolve));
  return greeting;
}

const portOf = (tcp: TcpServer): number => (tcp.address() as AddressInfo).port;

beforeAll(async () => {
  upstream = await startHttpUpstream("notes");
  listed = await greeter("listed");
  unlisted = await greeter("unlisted");
  const upstreams = join(tempDir(), "mcp-upstreams.yaml");
  writeFileSync(
    upstreams,
    `servers:\n  - name: notes\n    url: ${upstream.url}\n  - name: local\n    command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(UPSTREAM_SCRIPT)}, stdio]\n    network: none\n` +
      `  - name: reach\n    command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(UPSTREAM_SCRIPT)}, stdio]\n    network:\n      egress: ["127.0.0.1:${portOf(listed)}"]\n`,
  );
  server = await startTestServer({ maxConcurrentExecutions: 16, mcpUpstreams: upstreams });
  root = await wideRoot(server.url, server.dataDir);
  profile = await createProfileWith(root.operations, "mcp-dev", ProfileType.PERSONAL);
  // Destructive tools are refused, and so is an echo of "forbidden"; everything else is allowed.
  const source = bundleSource("personal", [
    {
      id: "mcp.no-destructive",
      gate: "toolGrant",
      effect: "deny",
      when: "'destructiveHint' in input.tool_annotations && input.tool_annotations['destructiveHint'] == 'true'",
    },
    { id: "mcp.no-forbidden-echo", gate: "toolGrant", effect: "deny", when: "'text' in input.tool_arguments && input.tool_arguments['text'] == 'forbidden'" },
    { id: "mcp.allow", gate: "toolGrant", effect: "allow", when: "true" },
    { id: "test.allow-model-providers", gate: "modelProviderUse", effect: "allow", when: "true" },
    { id: "test.allow-network", gate: "networkProfile", effect: "allow", when: "true" },
    { id: "test.allow-containers", gate: "containerExecution", effect: "allow", when: "true" },
    { id: "test.allow-artifacts", gate: "artifactAccess", effect: "allow", when: "true" },
  ]);
  await policyClient(server.url, await policyAdmin(server.dataDir, [ProfileType.PERSONAL])).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source });
  for (const tool of ["notes/echo", "notes/erase", "notes/slow", "local/*", "reach/*"]) await applyGrant(root.operations, profile, tool);
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
  await server?.close();
  await upstream?.close();
  listed?.close();
  unlisted?.close();
});

describe("tools/list", () => {
  it("lists only the granted tools each delegation's scope covers, prefixed server__tool", async () => {
    const notesOnly = await mcpOf((await agentRunning(["notes/*"])).exec);
    const localEcho = await mcpOf((await agentRunning(["local/echo"])).exec);
    expect((await notesOnly.listTools()).tools.map((tool) => tool.name).sort()).toEqual(["notes__echo", "notes__erase", "notes__slow"]);
    // local/* is granted, local/echo is all this delegation covers.
    const local = (await localEcho.listTools()).tools;
    expect(local.map((tool) => tool.name)).toEqual(["local__echo"]);
    expect(local[0]!.annotations?.readOnlyHint).toBe(true);
  });
});

describe("tools/call", () => {
  it("forwards an allowed call to the HTTP upstream and audits it with a digest of its arguments, never the arguments", async () => {
    const { exec } = await agentRunning(["notes/*"]);
    const mcp = await mcpOf(exec);
    const result = await mcp.callTool({ name: "notes__echo", arguments: { text: "canary-7f3a" } });
    expect(result.isError).toBeFalsy();
    expect(resultText(result)).toBe("notes: canary-7f3a");
    const records = await auditOf(exec.operation.name);
    const record = records.find((r) => r.mcpToolCall?.tool === "echo");
    expect(record?.decision?.allowed).toBe(true);
    expect(record?.mcpToolCall).toMatchObject({ server: "notes", tool: "echo" });
    expect(record?.requestDigest).toBe(
      createHash("sha256")
        .update(canonicalJsonText({ text: "canary-7f3a" }))
        .digest("hex"),
    );
    expect(JSON.stringify(records, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain("canary-7f3a");
  });

  it("runs a stdio upstream inside a sandbox of its own (uid 65534, no audit key) and forwards to it", async () => {
    const mcp = await mcpOf((await agentRunning(["local/*"])).exec);
    const result = await mcp.callTool({ name: "local__echo", arguments: { text: "hello" } });
    expect(resultText(result)).toBe("stdio-upstream: hello");
    const probe = JSON.parse(
      resultText(await mcp.callTool({ name: "local__probe", arguments: { path: join(server.dataDir, "audit", "signing-key.pem") } })),
    ) as { uid: number; sees: boolean };
    expect(probe.sees).toBe(false);
    if (process.getuid?.() === 0) expect(probe.uid).toBe(65534);
  });

  it("refuses by the toolGrant gate on the tool's annotations and on the call's arguments, naming the rule, and audits the refusal", async () => {
    const { exec } = await agentRunning(["notes/*"]);
    const mcp = await mcpOf(exec);
    const erase = await mcp.callTool({ name: "notes__erase", arguments: { path: "/" } });
    expect(erase.isError).toBe(true);
    expect(resultText(erase)).toMatch(/refused by policy rule mcp\.no-destructive \(toolGrant gate\)/);
    const forbidden = await mcp.callTool({ name: "notes__echo", arguments: { text: "forbidden" } });
    expect(resultText(forbidden)).toMatch(/policy rule mcp\.no-forbidden-echo/);
    const refused = (await auditOf(exec.operation.name)).filter((r) => r.mcpToolCall !== undefined && !r.decision?.allowed);
    expect(refused.map((r) => r.decision?.rule).sort()).toEqual(["mcp.no-destructive", "mcp.no-forbidden-echo"]);
  });

  it("charges connectorCalls exactly: of 8 concurrent calls under a budget of 3, 3 are forwarded and the task ends naming the dimension", async () => {
    const { exec, agent } = await agentRunning(["notes/*"], { connectorCalls: 3n });
    const mcp = await mcpOf(exec);
    // A request that arrives once the task has ended is refused before MCP (its credential is revoked).
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        mcp
          .callTool({ name: "notes__echo", arguments: { text: `n${i}` } })
          .catch((error: unknown) => ({ isError: true, content: [{ type: "text", text: `${String(error)} is not running` }] })),
      ),
    );
    expect(results.filter((r) => !r.isError)).toHaveLength(3);
    const refusals = results.filter((r) => r.isError).map(resultText);
    expect(refusals.length).toBe(5);
    // The first refusal ends the task; calls decided after that find it no longer running.
    expect(refusals.some((text) => text.startsWith("refused by the connectorCalls budget"))).toBe(true);
    for (const text of refusals) expect(text).toMatch(/^refused by the connectorCalls budget|is not running$/);
    const { operation } = await waitForEnd(agent.operations, exec.operation.name);
    expect(operation.state).toBe(TaskState.FAILED);
    expect(operation.stopCause?.message).toMatch(/connectorCalls/);
    expect(operation.usage?.connectorCalls).toBe(3n);
  });
});

describe("attacks", () => {
  it("refuses a guessed prefixed name outside the caller's grant or scope, the same way whether the tool exists or not", async () => {
    const mcp = await mcpOf((await agentRunning(["local/echo"])).exec);
    const outOfScope = await mcp.callTool({ name: "notes__echo", arguments: { text: "x" } });
    expect(outOfScope.isError).toBe(true);
    expect(resultText(outOfScope)).toMatch(/refused by the delegation's scope \(tools\)/);
    const notesAll = await mcpOf((await agentRunning(["notes/*"])).exec);
    const ungranted = await notesAll.callTool({ name: "notes__secret", arguments: {} });
    expect(resultText(ungranted)).toMatch(/refused by profile rule tool-use-needs-grant-in-profile/);
    const noSuchServer = await notesAll.callTool({ name: "nowhere__echo", arguments: {} });
    expect(resultText(noSuchServer)).toMatch(/refused by the delegation's scope \(tools\)/);
    const everything = await mcpOf((await agentRunning(["*"])).exec);
    // Granted (local/*) and covered, but nothing of that name exists: not found, and not charged.
    const missing = await everything.callTool({ name: "local__nothing", arguments: {} });
    expect(resultText(missing)).toMatch(/^refused: no upstream MCP server local offers a tool nothing/);
  });

  it("refuses a forged credential (401) and a credential that is no running execution's (403)", async () => {
    const answer = (token: string) =>
      fetch(new URL("/mcp", server.url), {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
    expect((await answer("eyJhbGciOiJFZERTQSJ9.e30.AAAA")).status).toBe(401);
    expect((await answer(server.token)).status).toBe(403);
    const { exec, agent } = await agentRunning(["notes/*"]);
    await cancelAndWait(agent.operations, exec.operation.name);
    expect((await answer(exec.token)).status).toBe(401);
    await expect(gatewayClient(server.url, server.token)).rejects.toThrow();
  });
});

describe("transport", () => {
  it("answers initialize in each protocol version current clients speak, and refuses GET (the gateway is stateless)", async () => {
    const { exec } = await agentRunning(["notes/*"]);
    for (const protocolVersion of ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]) {
      const answer = await fetch(new URL("/mcp", server.url), {
        method: "POST",
        headers: { Authorization: `Bearer ${exec.token}`, "Content-Type": "application/json", Accept: "application/json, text/event-stream" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: { protocolVersion, capabilities: {}, clientInfo: { name: "raw", version: "1" } },
        }),
      });
      const text = await answer.text();
      const message = JSON.parse(text.startsWith("{") ? text : /^data: (.*)$/m.exec(text)![1]!) as { result: { protocolVersion: string } };
      expect(message.result.protocolVersion).toBe(protocolVersion);
    }
    const get = await fetch(new URL("/mcp", server.url), { headers: { Authorization: `Bearer ${exec.token}`, Accept: "text/event-stream" } });
    expect(get.status).toBe(405);
  });

  it("serves a client over HTTP/2 the same answers, governed the same (a denied tool is still refused)", async () => {
    const { exec } = await agentRunning(["notes/*"]);
    const session = http2.connect(server.url);
    try {
      /** One JSON-RPC request as one HTTP/2 POST; the answer is JSON or one server-sent event. */
      const rpc = (id: number, method: string, params: object, token = exec.token) =>
        new Promise<{ status: number; message: { result?: Record<string, unknown>; error?: { message: string } } }>((resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": "/mcp",
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            "mcp-protocol-version": "2025-06-18",
          });
          let status = 0;
          let text = "";
          stream.on("response", (headers) => (status = Number(headers[":status"])));
          stream.setEncoding("utf8");
          stream.on("data", (chunk: string) => (text += chunk));
          stream.on("end", () => resolve({ status, message: JSON.parse(text.startsWith("{") ? text : /^data: (.*)$/m.exec(text)![1]!) }));
          stream.on("error", reject);
          stream.end(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
        });
      const init = await rpc(1, "initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "h2", version: "1" } });
      expect(init.status).toBe(200);
      expect(init.message.result?.protocolVersion).toBe("2025-06-18");
      const list = await rpc(2, "tools/list", {});
      expect((list.message.result!.tools as { name: string }[]).map((tool) => tool.name).sort()).toEqual(["notes__echo", "notes__erase", "notes__slow"]);
      const echo = await rpc(3, "tools/call", { name: "notes__echo", arguments: { text: "over-h2" } });
      expect(resultText(echo.message.result!)).toBe("notes: over-h2");
      const erase = await rpc(4, "tools/call", { name: "notes__erase", arguments: { path: "/" } });
      expect(erase.message.result?.isError).toBe(true);
      expect(resultText(erase.message.result!)).toMatch(/refused by policy rule mcp\.no-destructive \(toolGrant gate\)/);
      // The credential is checked the same way too.
      expect((await rpc(5, "tools/list", {}, "forged")).status).toBe(401);
    } finally {
      session.close();
    }
  });
});

describe("an upstream's network profile", () => {
  it("lets a stdio upstream reach exactly the destinations its declaration lists through the egress proxy, and audits each connection", async () => {
    const mcp = await mcpOf((await agentRunning(["reach/*", "local/*"])).exec);
    const connect = async (name: string, target: string) => resultText(await mcp.callTool({ name, arguments: { target } }));
    expect(await connect("reach__connect", `127.0.0.1:${portOf(listed)}`)).toBe("200 hello from listed");
    // Attacks: a host:port the list does not hold, the same host under another name, the plane itself.
    expect(await connect("reach__connect", `127.0.0.1:${portOf(unlisted)}`)).toBe("403");
    expect(await connect("reach__connect", `localhost:${portOf(listed)}`)).toBe("403");
    expect(await connect("reach__connect", `127.0.0.1:${new URL(server.url).port}`)).toBe("403");
    // The default stays no network at all: no proxy is offered.
    expect(await connect("local__connect", `127.0.0.1:${portOf(listed)}`)).toBe("no proxy");
    await expect
      .poll(async () => (await auditOf("mcp-upstreams/reach")).map((r) => `${r.decision?.allowed} ${r.egress?.host}:${r.egress?.port}`).sort(), {
        timeout: 5000,
      })
      .toEqual(
        [
          `false 127.0.0.1:${portOf(unlisted)}`,
          `false 127.0.0.1:${new URL(server.url).port}`,
          `false localhost:${portOf(listed)}`,
          `true 127.0.0.1:${portOf(listed)}`,
        ].sort(),
      );
    const records = await auditOf("mcp-upstreams/reach");
    expect(records.every((r) => r.principal === "mcp-upstream:reach" && r.decision?.rule === "mcp-upstream-egress-list")).toBe(true);
    expect(records.find((r) => r.decision?.allowed)?.egress?.bytesReceived).toBe(BigInt("hello from listed\n".length));
  });

  it("refuses a forged upstream credential at the egress proxy like any unknown credential (407)", async () => {
    const status = await proxyConnectStatus(server.url, `127.0.0.1:${portOf(listed)}`, `amctl-upstream-${"A".repeat(43)}`);
    expect(status).toBe(407);
  });
});

describe("revocation", () => {
  it("revoking the grant ends a call in flight at once", async () => {
    const grant = await applyGrant(root.operations, profile, "notes/slow");
    const mcp = await mcpOf((await agentRunning(["notes/slow"])).exec);
    const started = Date.now();
    const call = mcp.callTool({ name: "notes__slow", arguments: { ms: 30_000 } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    // The other grant of notes/slow (beforeAll) goes first: one grant left still allows it.
    const revoke = async (name: string) => {
      const { operation } = await root.operations.submitOperation({
        requestId: requestId("revoke"),
        profile,
        spec: { kind: { case: "toolGrantRevoke", value: { grant: name } } },
      });
      expect((await waitForEnd(root.operations, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
    };
    await revoke(grant);
    const grants = await root.operations.listOperations({ pageSize: 100 });
    const first = grants.operations.find(
      (op) => op.spec?.kind.case === "toolGrantApply" && op.spec.kind.value.tool === "notes/slow" && op.name !== grant && op.state === TaskState.COMPLETED,
    );
    await revoke(first!.name);
    const result = await call;
    expect(result.isError).toBe(true);
    expect(resultText(result)).toMatch(/grant of notes\/slow .* was revoked/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("revoking the caller's delegation ends its call in flight at once", async () => {
    await applyGrant(root.operations, profile, "notes/slow");
    const { exec, delegation } = await agentRunning(["notes/*"]);
    const mcp = await mcpOf(exec);
    const started = Date.now();
    const call = mcp.callTool({ name: "notes__slow", arguments: { ms: 30_000 } }).then(
      (result) => resultText(result),
      (error: unknown) => String(error),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    await root.delegations.revokeDelegation({ name: delegation });
    expect(await call).toMatch(/revoked|closed|terminated|aborted/i);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe("inside a sandboxed execution", () => {
  it("an MCP client reaches /mcp through AMCTL_SERVER with its own credential", async () => {
    const { token } = await root.delegations.issueDelegation({
      subject: "sandboxed-agent",
      scope: { operationTypes: agentOperationTypes, profiles: ["*"], tools: ["notes/echo"], modelProviders: ["*"], budget: roomyBudget() },
    });
    const agent = clientsFor(server.url, token);
    const script = join(repoRoot, "examples/mcp/agent.mjs");
    const { operation } = await agent.operations.submitOperation(execution(profile, [process.execPath, script, "notes__echo"], {}, roomyBudget()));
    const { operation: done } = await waitForEnd(agent.operations, operation!.name);
    expect(done.state, done.stopCause?.message).toBe(TaskState.COMPLETED);
    expect(done.stopCause?.reason ?? StopReason.UNSPECIFIED).not.toBe(StopReason.SANDBOX_FAILED);
    const seen = JSON.parse(readFileSync(join(workspaceOf(server.dataDir, operation!.name), "mcp-result.json"), "utf8")) as {
      tools: string[];
      result: { content: { text: string }[] };
    };
    expect(seen.tools).toEqual(["notes__echo"]);
    expect(seen.result.content[0]!.text).toBe("notes: from inside");
    expect(done.usage?.connectorCalls).toBe(1n);
  });
});

/** The audit records about `operation` (root may read the log). */
async function auditOf(operation: string) {
  const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
  const records = [];
  for (let pageToken = ""; ; ) {
    const page = await audit.listAuditRecords({ pageSize: 200, pageToken });
    records.push(...page.records.filter((record) => record.resource === operation));
    pageToken = page.nextPageToken;
    if (pageToken === "") return records;
  }
}
