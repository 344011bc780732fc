// The operator's upstream declarations are read strictly (a bad file stops the start naming the
// field), and the gateway's tool names round-trip: `server__tool` splits at the first `__`.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { exposedName, grantName, parseExposedName } from "../../src/gateways/mcp-tool-names.js";
import { readMcpUpstreams } from "../../src/gateways/mcp-upstreams.js";
import { UpstreamDeclarations } from "../../src/gateways/mcp-upstream-declarations.js";
import { messageOfUpstream, upstreamOfMessage } from "../../src/gateways/mcp-upstream-messages.js";
import { createLogger } from "../../src/api/logger.js";
import { McpUpstreamSchema, McpUpstreamSource, type McpUpstream as McpUpstreamMessage } from "../../src/gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { tempDir } from "../helpers/temp-dir.js";

function declared(yaml: string) {
  const file = join(tempDir(), "upstreams.yaml");
  writeFileSync(file, yaml);
  return () => readMcpUpstreams(file);
}

describe("readMcpUpstreams", () => {
  it("reads HTTP and command upstreams", () => {
    const upstreams = declared(
      "servers:\n  - name: notes\n    url: http://127.0.0.1:9/mcp\n  - name: files\n    command: [node, server.mjs]\n    network: none\n",
    )();
    expect(upstreams).toEqual([
      { name: "notes", transport: "http", url: new URL("http://127.0.0.1:9/mcp") },
      { name: "files", transport: "stdio", command: ["node", "server.mjs"], egress: [] },
    ]);
  });

  it("reads a command upstream's egress list, hosts lower-cased", () => {
    const [upstream] = declared("servers:\n  - name: web\n    command: [x]\n    network:\n      egress: [Api.Example.com:443, '[::1]:8080']\n")();
    expect(upstream).toMatchObject({
      egress: [
        { host: "api.example.com", port: 443 },
        { host: "::1", port: 8080 },
      ],
    });
  });

  it.each([
    ["servers: {}", /servers: must be a list/],
    ["servers:\n  - name: Notes_1\n    url: http://x/mcp", /servers\[0\]\.name: must match/],
    ["servers:\n  - name: a\n    url: http://x/mcp\n  - name: a\n    url: http://y/mcp", /servers\[1\]\.name: a is declared twice/],
    ["servers:\n  - name: a", /needs exactly one of url/],
    ["servers:\n  - name: a\n    url: http://x\n    command: [x]", /needs exactly one of url/],
    ["servers:\n  - name: a\n    url: file:///etc/passwd", /servers\[0\]\.url: must be an http or https URL/],
    ["servers:\n  - name: a\n    command: []", /servers\[0\]\.command: must be a non-empty list/],
    ["servers:\n  - name: a\n    command: [x]\n    network: open", /servers\[0\]\.network: must be none/],
    ["servers:\n  - name: a\n    command: [x]\n    network: {egress: []}", /servers\[0\]\.network\.egress: must be a non-empty list/],
    ["servers:\n  - name: a\n    command: [x]\n    network: {egress: [example.com]}", /servers\[0\]\.network\.egress\[0\]: must be host:port/],
    ["servers:\n  - name: a\n    command: [x]\n    network: {egress: ['*:443']}", /servers\[0\]\.network\.egress\[0\]: must be host:port/],
    ["servers:\n  - name: a\n    command: [x]\n    network: {egress: ['a:443'], ingress: []}", /servers\[0\]\.network\.ingress: is not a field/],
    ["servers:\n  - name: a\n    url: http://x\n    network: {egress: ['a:443']}", /servers\[0\]\.network: applies to a stdio upstream only/],
    ["servers:\n  - name: a\n    url: http://x\n    headers: {}", /servers\[0\]\.headers: is not a field/],
  ])("refuses %j naming the field", (yaml, message) => {
    expect(declared(yaml)).toThrow(message);
  });
});

describe("a declaration through the API", () => {
  it("is read by the file's rules and written back as it is used (URL normalized, hosts lower-cased)", () => {
    const message = create(McpUpstreamSchema, {
      name: "web",
      transport: { case: "stdio", value: { command: ["x"], egress: ["Api.Example.com:443", "[::1]:80"] } },
    });
    const upstream = upstreamOfMessage(message);
    expect(upstream).toEqual({
      name: "web",
      transport: "stdio",
      command: ["x"],
      egress: [
        { host: "api.example.com", port: 443 },
        { host: "::1", port: 80 },
      ],
    });
    expect(messageOfUpstream(upstream, McpUpstreamSource.API).transport.value).toMatchObject({ egress: ["api.example.com:443", "[::1]:80"] });
    expect(() => upstreamOfMessage(create(McpUpstreamSchema, { name: "web" }))).toThrow(
      "upstream: needs exactly one of http.url (an HTTP upstream) or stdio.command (a stdio upstream)",
    );
  });
});

describe("UpstreamDeclarations", () => {
  it("re-reads the store only when its version moved, and keeps the file's upstream where a stored one has its name", async () => {
    let version = 1n;
    let lists = 0;
    const stored: McpUpstreamMessage[] = [
      create(McpUpstreamSchema, { name: "fixed", transport: { case: "http", value: { url: "http://other/mcp" } } }),
      create(McpUpstreamSchema, { name: "live", transport: { case: "http", value: { url: "http://live/mcp" } } }),
    ];
    const store = {
      mcpUpstreamsVersion: async () => version,
      listMcpUpstreams: async () => {
        lists += 1;
        return stored;
      },
    };
    const fixed = { name: "fixed", transport: "http" as const, url: new URL("http://fixed/mcp") };
    const declarations = new UpstreamDeclarations({ path: "/etc/upstreams.yaml", upstreams: [fixed] }, store, createLogger("fatal"));
    const first = await declarations.now();
    expect([...first.keys()]).toEqual(["fixed", "live"]);
    expect(first.get("fixed")).toBe(fixed);
    expect(await declarations.now()).toBe(first);
    expect(lists).toBe(1);
    stored.pop();
    version = 2n;
    expect([...(await declarations.now()).keys()]).toEqual(["fixed"]);
    expect(lists).toBe(2);
    expect(declarations.fileDeclaring("fixed")).toBe("/etc/upstreams.yaml");
    expect(declarations.fileDeclaring("live")).toBeUndefined();
  });
});

describe("tool names", () => {
  it("exposes server__tool, splits at the first __, and grants server/tool", () => {
    const target = { server: "notes", tool: "read__all" };
    expect(exposedName(target)).toBe("notes__read__all");
    expect(parseExposedName("notes__read__all")).toEqual(target);
    expect(grantName(target)).toBe("notes/read__all");
    for (const name of ["notes", "__read", "notes__", ""]) expect(parseExposedName(name)).toBeUndefined();
  });
});
