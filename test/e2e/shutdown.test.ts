// `amctl serve` as a real process: SIGTERM and SIGINT drain open streams and exit 0 in time.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { startChildServer } from "../helpers/server.js";

describe("graceful shutdown", () => {
  it.each(["SIGTERM", "SIGINT"] as const)("%s with an open stream ends the stream with Unavailable and exits 0 within 10 s", async (signal) => {
    const server = await startChildServer();
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const stream = health.watch({ service: "" });
    const iterator = stream[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.status).toBe(Status.SERVING);

    const started = Date.now();
    server.child.kill(signal);
    // The watcher is told NOT_SERVING, then the stream ends with Unavailable.
    expect((await iterator.next()).value?.status).toBe(Status.NOT_SERVING);
    const end = await iterator.next().catch((error: unknown) => ConnectError.from(error));
    expect(end).toBeInstanceOf(ConnectError);
    expect((end as ConnectError).code).toBe(Code.Unavailable);

    expect(await server.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(server.stderr()).toMatch(/"msg":"stopped"/);
  });

  it("a client that never closes its connection does not hold shutdown past the grace period", async () => {
    const server = await startChildServer(["--shutdown-grace-ms", "500"]);
    // An HTTP/2 session left open by the client, with no stream.
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    await health.check({});
    const started = Date.now();
    server.child.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
