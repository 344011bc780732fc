// `amctl serve --metrics-listen HOST:PORT`: the Prometheus text format at /metrics, on a listener
// of its own, apart from the API's port. Nothing about the server is on the public port, and the
// operator decides who may reach this one (bind it to loopback or to a monitoring network).
// Plain HTTP/1.1, as Prometheus scrapes; it answers GET and HEAD of /metrics and nothing else.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../api/logger.js";

export interface MetricsListener {
  /** `http://HOST:PORT/metrics`, once listening. */
  url: string;
  close(): Promise<void>;
}

export async function listenForMetrics(registry: Registry, address: { host: string; port: number }, log: Logger): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    if (new URL(req.url ?? "/", "http://metrics").pathname !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(req.method === "HEAD" ? undefined : text),
      (error: unknown) => {
        log.warn({ err: error }, "could not collect the metrics");
        res.writeHead(500, { "content-type": "text/plain" }).end("could not collect the metrics; see the server log\n");
      },
    );
  });
  // Scrapes are short: a connection left idle is not kept for long.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const host = bound.address.includes(":") ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${host}:${bound.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
