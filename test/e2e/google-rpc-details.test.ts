// A client that knows only the google.rpc types reads every refusal: over gRPC from the
// `grpc-status-details-bin` trailer (a google.rpc.Status, as gax-go, api_core and grpc-status
// libraries read it), over Connect from the error JSON's details. It finds the ErrorInfo reason,
// the field a BadRequest names (also for the protovalidate interceptor's refusals, whose own
// detail is buf.validate.Violations) and the condition a PreconditionFailure states.
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ListOperationsRequestSchema, OperationService, SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { HeartbeatRequestSchema, WorkerService } from "../../src/gen/agentmachine/v1/worker_service_pb.js";
import { BadRequestSchema, ErrorInfoSchema, PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema, type Status } from "../../src/gen/google/rpc/status_pb.js";
import { errorWithInfo } from "../../src/api/errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
let client: grpc.Client;

beforeAll(async () => {
  server = await startTestServer();
  client = new grpc.Client(new URL(server.url).host, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client.close();
  await server.close();
});

/** The google.rpc.Status a plain gRPC client gets for a unary call that fails. */
function statusOfCall<I extends DescMessage>(path: string, schema: I, request: MessageShape<I>, token: string | undefined): Promise<Status> {
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (message: MessageShape<I>) => Buffer.from(toBinary(schema, message)),
      (bytes: Buffer) => bytes,
      request,
      metadata,
      (error) => {
        const details = error?.metadata?.get("grpc-status-details-bin")[0];
        if (!(details instanceof Buffer)) return reject(new Error(`no grpc-status-details-bin: ${error?.message ?? "the call succeeded"}`));
        const status = fromBinary(StatusSchema, details);
        expect(status.code).toBe(error!.code);
        resolve(status);
      },
    );
  });
}

const path = (service: { typeName: string }, method: string) => `/${service.typeName}/${method}`;
const unpacked = <D extends DescMessage>(status: Status, schema: D) =>
  status.details.map((detail) => anyUnpack(detail, schema)).filter((detail) => detail !== undefined);

describe("a client that knows only google.rpc", () => {
  it("reads the reason of a refusal from grpc-status-details-bin", async () => {
    const status = await statusOfCall(path(OperationService, "ListOperations"), ListOperationsRequestSchema, create(ListOperationsRequestSchema), undefined);
    expect(status.code).toBe(Code.Unauthenticated);
    expect(unpacked(status, ErrorInfoSchema)).toEqual([expect.objectContaining({ domain: "agentmachine.v1", reason: expect.stringMatching(/^[A-Z_]+$/) })]);
  });

  it("finds the field of a protovalidate refusal in a BadRequest, beside buf.validate.Violations", async () => {
    const status = await statusOfCall(
      path(OperationService, "SubmitOperation"),
      SubmitOperationRequestSchema,
      create(SubmitOperationRequestSchema),
      server.token,
    );
    expect(status.code).toBe(Code.InvalidArgument);
    const [badRequest] = unpacked(status, BadRequestSchema);
    expect(badRequest?.fieldViolations.map((violation) => violation.field)).toContain("request_id");
    expect(unpacked(status, ErrorInfoSchema)[0]).toMatchObject({ domain: "agentmachine.v1", reason: "INVALID_FIELD" });
    expect(status.details.map((detail) => detail.typeUrl)).toContain("type.googleapis.com/buf.validate.Violations");
  });

  it("finds the field the server itself rejects in a BadRequest", async () => {
    const request = create(ListOperationsRequestSchema, { pageSize: 1, pageToken: "not-a-token" });
    const status = await statusOfCall(path(OperationService, "ListOperations"), ListOperationsRequestSchema, request, server.token);
    expect(status.code).toBe(Code.InvalidArgument);
    expect(unpacked(status, BadRequestSchema)[0]?.fieldViolations).toEqual([
      expect.objectContaining({ field: "page_token", description: expect.stringContaining("page token") }),
    ]);
    expect(unpacked(status, ErrorInfoSchema)[0]).toMatchObject({ reason: "INVALID_FIELD", metadata: { field: "page_token" } });
  });

  it("reads a FailedPrecondition's condition from a PreconditionFailure", async () => {
    const request = create(HeartbeatRequestSchema, { worker: "workers/w1" });
    const status = await statusOfCall(path(WorkerService, "Heartbeat"), HeartbeatRequestSchema, request, server.token);
    expect(status.code).toBe(Code.FailedPrecondition);
    expect(unpacked(status, PreconditionFailureSchema)[0]?.violations).toEqual([
      expect.objectContaining({ type: "WORKERS_DISABLED", description: status.message }),
    ]);
  });

  it("reads the same details from a Connect error's JSON", async () => {
    const response = await fetch(`${server.url}${path(OperationService, "ListOperations")}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${server.token}` },
      body: JSON.stringify({ pageToken: "not-a-token" }),
    });
    const body = (await response.json()) as { code: string; details: { type: string; value: string }[] };
    expect(body.code).toBe("invalid_argument");
    const detail = (type: string) => body.details.find((d) => d.type === type)?.value ?? "";
    expect(fromBinary(ErrorInfoSchema, Buffer.from(detail("google.rpc.ErrorInfo"), "base64")).reason).toBe("INVALID_FIELD");
    expect(fromBinary(BadRequestSchema, Buffer.from(detail("google.rpc.BadRequest"), "base64")).fieldViolations[0]?.field).toBe("page_token");
  });
});

describe("EvaluatePolicy's denial", () => {
  it("is the google.rpc.Status the call would get, its details whole in JSON", async () => {
    const response = await fetch(`${server.url}/agentmachine.v1.PolicyService/EvaluatePolicy`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${server.token}` },
      body: JSON.stringify({ operation: { requestId: "dry-run-1", profile: "profiles/missing", spec: { toolGrantApply: { tool: "git" } } } }),
    });
    expect(response.status).toBe(200);
    const { denial } = (await response.json()) as { denial: { code: number; message: string; details: Record<string, unknown>[] } };
    expect(denial).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringContaining("profiles/missing") });
    expect(denial.details).toContainEqual(expect.objectContaining({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "PROFILE_NOT_FOUND" }));
    expect(denial.details).toContainEqual(expect.objectContaining({ "@type": "type.googleapis.com/google.rpc.PreconditionFailure" }));
  });
});

describe("PreconditionFailure", () => {
  it("names as its subject the resource the metadata names", () => {
    const error = errorWithInfo(Code.FailedPrecondition, "NOT_RUNNING", "operations/x is not running", { operation: "operations/x" });
    expect(error.findDetails(PreconditionFailureSchema)[0]?.violations).toEqual([expect.objectContaining({ type: "NOT_RUNNING", subject: "operations/x" })]);
    expect(errorWithInfo(Code.PermissionDenied, "OUT_OF_SCOPE", "no").findDetails(PreconditionFailureSchema)).toEqual([]);
  });
});
