// The protocol matrix over real sockets: every protocol (Connect, gRPC, gRPC-Web), over HTTP/2
// and, where the protocol allows, HTTP/1.1, with the binary and the JSON codec, with and
// without gzip. Each cell runs the same checks, so a gap in one combination shows by name.
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { credentialHeaderBytes } from "../helpers/auth.js";
import { transportFor, type ProtocolName, type TransportOptions } from "../helpers/clients.js";
import { ambientAuthorityContractText, exampleContractText } from "../helpers/contract-documents.js";
import { startCountingProxy } from "../helpers/counting-proxy.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { registerToken } from "../helpers/tokens.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Each protocol on each HTTP version it runs on, and the header naming its response compression. */
const wires: { protocol: ProtocolName; httpVersion: "1.1" | "2"; encodingHeader: string }[] = [
  { protocol: "connect", httpVersion: "2", encodingHeader: "content-encoding" },
  { protocol: "connect", httpVersion: "1.1", encodingHeader: "content-encoding" },
  { protocol: "grpc", httpVersion: "2", encodingHeader: "grpc-encoding" },
  { protocol: "grpc-web", httpVersion: "2", encodingHeader: "grpc-encoding" },
  { protocol: "grpc-web", httpVersion: "1.1", encodingHeader: "grpc-encoding" },
];
const codecs = [
  { codec: "binary", useBinaryFormat: true },
  { codec: "JSON", useBinaryFormat: false },
];
const compressions = ["identity", "gzip"] as const;

const cells = wires.flatMap((wire) =>
  codecs.flatMap(({ codec, useBinaryFormat }) =>
    compressions.map((compression) => ({
      name: `${wire.protocol} over HTTP/${wire.httpVersion}, ${codec}, ${compression}`,
      encodingHeader: wire.encodingHeader,
      gzip: compression === "gzip",
      options: {
        protocol: wire.protocol,
        httpVersion: wire.httpVersion,
        useBinaryFormat,
        gzip: compression === "gzip",
        identityOnly: compression === "identity",
      } satisfies TransportOptions,
    })),
  ),
);

/** The ConnectError a call or a stream's consumption ends with; fails the test if it succeeds. */
async function failureOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  return expect.fail("expected the call to fail");
}

/** Runs a call and returns the response headers it got. */
async function responseHeaders(call: (options: CallOptions) => Promise<unknown>): Promise<Headers> {
  let headers: Headers | undefined;
  await call({ onHeader: (h) => (headers = h) });
  return headers ?? expect.fail("no response headers");
}

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

describe.each(cells)("$name", (cell) => {
  let contracts: Client<typeof ContractService>;
  let health: Client<typeof Health>;
  beforeAll(() => {
    const transport = transportFor(server.url, cell.options);
    contracts = createClient(ContractService, transport);
    health = createClient(Health, transport);
  });

  it("ValidateContract finds the upstream example document valid, with no violations", async () => {
    const res = await contracts.validateContract({ document: { case: "json", value: exampleContractText } });
    expect(res.valid).toBe(true);
    expect(res.violations).toEqual([]);
  });

  it("GetContract returns the server's contract, whose JSON validates when sent back", async () => {
    const { contract, json } = await contracts.getContract({});
    expect(contract?.kind).toBe("WorkspaceOperationContract");
    expect(JSON.parse(json)).toMatchObject({ kind: "WorkspaceOperationContract", specVersion: contract?.specVersion });
    const res = await contracts.validateContract({ document: { case: "json", value: json } });
    expect(res).toMatchObject({ valid: true, violations: [] });
  });

  it("ValidateContract answers valid = false with a violation at /controls/ambientAuthority for ambient authority", async () => {
    const res = await contracts.validateContract({ document: { case: "json", value: ambientAuthorityContractText() } });
    expect(res.valid).toBe(false);
    expect(res.violations.map(({ path, keyword }) => ({ path, keyword }))).toEqual([{ path: "/controls/ambientAuthority", keyword: "const" }]);
  });

  it("ValidateContract without a document fails with InvalidArgument carrying a buf.validate violation of field document", async () => {
    const error = await failureOf(contracts.validateContract({}));
    expect(error.code).toBe(Code.InvalidArgument);
    const [violations, ...more] = error.findDetails(ViolationsSchema);
    expect(more).toEqual([]);
    expect(violations?.violations.map((v) => ({ ruleId: v.ruleId, fields: v.field?.elements.map((e) => e.fieldName) }))).toEqual([
      { ruleId: "required", fields: ["document"] },
    ]);
    expect(error.metadata.get("x-request-id")).toMatch(UUID);
  });

  it("Health/Watch streams SERVING first and ends as Canceled when the client aborts", async () => {
    const abort = new AbortController();
    const seen: Status[] = [];
    const error = await failureOf(
      (async () => {
        for await (const { status } of health.watch({ service: "" }, { signal: abort.signal })) {
          seen.push(status);
          abort.abort();
        }
      })(),
    );
    expect(seen).toEqual([Status.SERVING]);
    expect(error.code).toBe(Code.Canceled);
  });

  it("Health/Watch with a 200 ms timeout sends SERVING, then ends with DeadlineExceeded", async () => {
    const seen: Status[] = [];
    const error = await failureOf(
      (async () => {
        for await (const { status } of health.watch({ service: "" }, { timeoutMs: 200 })) seen.push(status);
      })(),
    );
    expect(seen).toEqual([Status.SERVING]);
    expect(error.code).toBe(Code.DeadlineExceeded);
  });

  it("answers with a fresh x-request-id, and echoes a well-formed one the client sends", async () => {
    const fresh = await responseHeaders((options) => health.check({ service: "" }, options));
    expect(fresh.get("x-request-id")).toMatch(UUID);
    const requestId = `interop.${cell.options.protocol}:${cell.options.httpVersion}-1`;
    const echoed = await responseHeaders((options) => health.check({ service: "" }, { ...options, headers: { "x-request-id": requestId } }));
    expect(echoed.get("x-request-id")).toBe(requestId);
  });

  it(`${cell.gzip ? "gzips" : "does not compress"} request and response messages on the wire`, async () => {
    // A fresh client through a byte-counting relay: the example document (5.5 kB) goes up, the
    // server's contract (over 6 kB of JSON text alone) comes down; gzip shrinks both well below.
    const proxy = await startCountingProxy(server.port);
    registerToken(proxy.url, server.token);
    try {
      const client = createClient(ContractService, transportFor(proxy.url, cell.options));
      await client.validateContract({ document: { case: "json", value: exampleContractText } });
      // Not counting the credential: its header (over 1 kB) is no part of what gzip is about.
      const sent = proxy.bytes().sent - credentialHeaderBytes(server.token, cell.options.httpVersion);
      let json = "";
      const headers = await responseHeaders(async (options) => ({ json } = await client.getContract({}, options)));
      const received = proxy.bytes().received;
      if (cell.gzip) {
        expect(headers.get(cell.encodingHeader)).toBe("gzip");
        expect(sent).toBeLessThan(exampleContractText.length);
        expect(received).toBeLessThan(json.length);
      } else {
        expect(headers.get(cell.encodingHeader)).toBeNull();
        expect(sent).toBeGreaterThan(exampleContractText.length);
        expect(received).toBeGreaterThan(json.length);
      }
    } finally {
      await proxy.close();
    }
  });
});
