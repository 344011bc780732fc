// The outermost interceptor: an unexpected exception never reaches the wire as anything but
// an opaque Internal error with a request id; the log keeps the detail under the same id.
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import { errorInterceptor, loggingInterceptor } from "../../src/server/interceptors.js";
import { createLogger } from "../../src/api/logger.js";

const SECRET = "sk-live-CANARY-0123456789abcdef";

function setup() {
  const lines: string[] = [];
  const log = createLogger(
    "debug",
    new Writable({
      write: (chunk, _e, cb) => {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  const transport = createRouterTransport(
    (router) => {
      router.service(ContractService, {
        validateContract() {
          throw new Error(`database at /var/lib/secret failed with token ${SECRET}`);
        },
        getContract() {
          throw new ConnectError("not here", Code.FailedPrecondition);
        },
      });
      router.service(Health, {
        check() {
          return { status: 1 };
        },
        list() {
          return { statuses: {} };
        },
        async *watch() {
          yield { status: 1 };
          throw new TypeError(`mid-stream failure ${SECRET}`);
        },
      });
    },
    { router: { interceptors: [errorInterceptor(log), loggingInterceptor(log)] } },
  );
  return { lines, transport };
}

describe("error interceptor", () => {
  it("turns an unexpected exception into Internal that names only a request id", async () => {
    const { lines, transport } = setup();
    const error = ConnectError.from(
      await createClient(ContractService, transport)
        .validateContract({})
        .catch((e: unknown) => e),
    );
    expect(error.code).toBe(Code.Internal);
    expect(error.rawMessage).toMatch(/^internal error; request id [0-9a-f-]{36}$/);
    expect(error.rawMessage).not.toContain(SECRET);
    const [info] = error.findDetails(ErrorInfoSchema);
    expect(info?.reason).toBe("INTERNAL");
    const requestId = info!.metadata.request_id!;
    expect(error.metadata.get("x-request-id")).toBe(requestId);
    // The detail is in the log, under the same request id, for the operator.
    const logged = lines.map((l) => JSON.parse(l) as { requestId?: string; msg: string; err?: { message: string } });
    expect(logged.find((l) => l.msg === "unexpected error in handler")).toMatchObject({ requestId, err: { message: expect.stringContaining("database") } });
  });

  it("passes a deliberate ConnectError through unchanged", async () => {
    const { transport } = setup();
    await expect(createClient(ContractService, transport).getContract({})).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      rawMessage: "not here",
    });
  });

  it("sanitizes an exception thrown in the middle of a stream", async () => {
    const { transport } = setup();
    const received: number[] = [];
    const error = await (async () => {
      for await (const { status } of createClient(Health, transport).watch({})) received.push(status);
    })().catch((e: unknown) => ConnectError.from(e));
    expect(received).toEqual([1]);
    expect(error).toMatchObject({ code: Code.Internal });
    expect((error as ConnectError).rawMessage).not.toContain(SECRET);
  });

  it("echoes a well-formed client request id and replaces a malformed one", async () => {
    const { transport } = setup();
    const client = createClient(ContractService, transport);
    const ids = [];
    for (const offered of ["client-id-42", "bad id with spaces"]) {
      const error = ConnectError.from(await client.validateContract({}, { headers: { "x-request-id": offered } }).catch((e: unknown) => e));
      ids.push(error.metadata.get("x-request-id"));
    }
    expect(ids[0]).toBe("client-id-42");
    expect(ids[1]).toMatch(/^[0-9a-f-]{36}$/);
  });
});
