// grpc.health.v1 and server reflection over real sockets: what `buf curl`, grpcurl and load
// balancers rely on.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { repoRoot, startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

describe("grpc.health.v1.Health", () => {
  const health = () => createClient(Health, createGrpcTransport({ baseUrl: server.url }));

  it("Check answers SERVING for the server and for each of our services", async () => {
    expect((await health().check({ service: "" })).status).toBe(Status.SERVING);
    expect((await health().check({ service: "agentmachine.v1.ContractService" })).status).toBe(Status.SERVING);
  });

  it("Check of an unknown service is NotFound", async () => {
    await expect(health().check({ service: "no.such.Service" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("List names every served service, and the sandbox entry (SERVING: executions are sandboxed)", async () => {
    const { statuses } = await health().list({});
    expect(statuses["agentmachine.v1.ExecutionSandbox"]?.status).toBe(Status.SERVING);
    expect(Object.keys(statuses).sort()).toEqual(
      [
        "",
        "agentmachine.v1.ExecutionSandbox",
        "agentmachine.v1.AuditService",
        "agentmachine.v1.ContractService",
        "agentmachine.v1.DelegationService",
        "agentmachine.v1.DiagnosticsService",
        "agentmachine.v1.McpUpstreamService",
        "agentmachine.v1.OperationService",
        "agentmachine.v1.OutputService",
        "agentmachine.v1.PolicyService",
        "agentmachine.v1.RuntimeService",
        "agentmachine.v1.ProfileService",
        "agentmachine.v1.WorkerService",
        "agentmachine.v1.WorkspaceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ].sort(),
    );
  });

  it("Watch sends the current status, then every change", async () => {
    const service = "agentmachine.v1.ContractService";
    const abort = new AbortController();
    const seen: Status[] = [];
    const stream = health().watch({ service }, { signal: abort.signal });
    try {
      for await (const { status } of stream) {
        seen.push(status);
        if (seen.length === 1) server.health.set(service, Status.NOT_SERVING);
        if (seen.length === 2) server.health.set(service, Status.SERVING);
        if (seen.length === 3) break;
      }
    } finally {
      abort.abort();
    }
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
  });

  it("Watch of an unknown service says SERVICE_UNKNOWN instead of failing", async () => {
    const abort = new AbortController();
    for await (const { status } of health().watch({ service: "later.Service" }, { signal: abort.signal })) {
      expect(status).toBe(Status.SERVICE_UNKNOWN);
      break;
    }
    abort.abort();
  });
});

describe("server reflection", () => {
  it.each([
    ["v1", reflectionV1],
    ["v1alpha", reflectionV1alpha],
  ] as const)("%s lists our services and resolves their files so a client can decode them", async (_version, api) => {
    // Both versions have the same messages; typing them as v1 keeps one test body.
    const client = createClient(api.ServerReflection as typeof reflectionV1.ServerReflection, createGrpcTransport({ baseUrl: server.url }));
    const request = (messageRequest: reflectionV1.ServerReflectionRequest["messageRequest"]) =>
      create(api.ServerReflectionRequestSchema as typeof reflectionV1.ServerReflectionRequestSchema, { messageRequest });
    const requests = [
      request({ case: "listServices", value: "*" }),
      request({ case: "fileContainingSymbol", value: "agentmachine.v1.ContractService" }),
      request({ case: "fileContainingSymbol", value: "agentmachine.v1.ContractService.ValidateContract" }),
      request({ case: "fileByFilename", value: "no/such.proto" }),
    ];
    async function* send() {
      yield* requests;
    }
    const responses = [];
    for await (const response of client.serverReflectionInfo(send())) responses.push(response);
    expect(responses).toHaveLength(4);

    const [list, bySymbol, byMethod, missing] = responses.map((r) => r.messageResponse);
    expect(list?.case).toBe("listServicesResponse");
    expect(list?.case === "listServicesResponse" && list.value.service.map((s) => s.name)).toContain("agentmachine.v1.ContractService");

    // The files (with all transitive imports) are enough to build a registry and find the RPC.
    expect(bySymbol?.case).toBe("fileDescriptorResponse");
    if (bySymbol?.case !== "fileDescriptorResponse") return;
    const files = bySymbol.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
    expect(files[0]?.name).toBe("agentmachine/v1/contract_service.proto");
    const registry = createFileRegistry(files[0]!, (name) => files.find((f) => f.name === name));
    const service = registry.getService("agentmachine.v1.ContractService");
    expect(service?.methods.map((m) => m.name)).toEqual(["ValidateContract", "GetContract"]);
    expect(registry.getMessage("agentmachine.v1.WorkspaceOperationContract")?.fields.length).toBe(10);

    expect(byMethod?.case).toBe("fileDescriptorResponse");
    expect(missing).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
  });

  it.each(["grpc-v1", "grpc-v1alpha"])("buf curl calls GetContract with no local protos (reflection %s)", async (reflectProtocol) => {
    // The credential is for the call (buf curl sends -H headers with its reflection requests
    // too, which need none: --list-methods below goes without).
    const { stdout } = await run(
      `${repoRoot}/node_modules/.bin/buf`,
      [
        "curl",
        "--http2-prior-knowledge",
        "--protocol",
        "grpc",
        "--reflect-protocol",
        reflectProtocol,
        "-H",
        `authorization: Bearer ${server.token}`,
        `${server.url}/agentmachine.v1.ContractService/GetContract`,
      ],
      { cwd: "/tmp" },
    );
    const response = JSON.parse(stdout) as { contract: { kind: string }; json: string };
    expect(response.contract.kind).toBe("WorkspaceOperationContract");
  });

  it("buf curl --list-methods shows every RPC", async () => {
    const { stdout } = await run(`${repoRoot}/node_modules/.bin/buf`, ["curl", "--http2-prior-knowledge", "--list-methods", server.url], { cwd: "/tmp" });
    expect(stdout.trim().split("\n")).toEqual([
      "agentmachine.v1.AuditService/GetCheckpoint",
      "agentmachine.v1.AuditService/ListAuditRecords",
      "agentmachine.v1.AuditService/ListCheckpoints",
      "agentmachine.v1.AuditService/PruneAuditLog",
      "agentmachine.v1.AuditService/WatchAuditRecords",
      "agentmachine.v1.ContractService/GetContract",
      "agentmachine.v1.ContractService/ValidateContract",
      "agentmachine.v1.DelegationService/GetDelegation",
      "agentmachine.v1.DelegationService/IssueDelegation",
      "agentmachine.v1.DelegationService/ListDelegations",
      "agentmachine.v1.DelegationService/RevokeDelegation",
      "agentmachine.v1.DelegationService/WhoAmI",
      "agentmachine.v1.DiagnosticsService/DownloadDiagnostics",
      "agentmachine.v1.McpUpstreamService/DeleteMcpUpstream",
      "agentmachine.v1.McpUpstreamService/ListMcpUpstreams",
      "agentmachine.v1.McpUpstreamService/PutMcpUpstream",
      "agentmachine.v1.OperationService/CancelOperation",
      "agentmachine.v1.OperationService/GetOperation",
      "agentmachine.v1.OperationService/ListOperations",
      "agentmachine.v1.OperationService/SubmitOperation",
      "agentmachine.v1.OperationService/WatchEvents",
      "agentmachine.v1.OperationService/WatchOperation",
      "agentmachine.v1.OutputService/WatchOutput",
      "agentmachine.v1.PolicyService/ApplyPolicyBundle",
      "agentmachine.v1.PolicyService/EvaluatePolicy",
      "agentmachine.v1.PolicyService/ListPolicyBundles",
      "agentmachine.v1.ProfileService/ExplainSeparation",
      "agentmachine.v1.RuntimeService/AuthorizeCall",
      "agentmachine.v1.RuntimeService/ReportUsage",
      "agentmachine.v1.WorkerService/AppendOutput",
      "agentmachine.v1.WorkerService/Connect",
      "agentmachine.v1.WorkerService/Heartbeat",
      "agentmachine.v1.WorkerService/ReportOutcome",
      "agentmachine.v1.WorkerService/ReportProgress",
      "agentmachine.v1.WorkspaceService/DeleteWorkspace",
      "agentmachine.v1.WorkspaceService/DownloadWorkspaceFile",
      "agentmachine.v1.WorkspaceService/ListWorkspaceFiles",
      "grpc.health.v1.Health/Check",
      "grpc.health.v1.Health/List",
      "grpc.health.v1.Health/Watch",
      "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]);
  });
});

it("an unknown RPC is Unimplemented, while no declared RPC is", async () => {
  const err = await createClient(Health, createGrpcTransport({ baseUrl: `${server.url}/nope` }))
    .check({})
    .catch((e: unknown) => e);
  expect(ConnectError.from(err).code).toBe(Code.Unimplemented);
});
