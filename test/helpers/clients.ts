// Connect-es clients for each protocol over real sockets.
import { authInterceptors } from "./tokens.js";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

export type ProtocolName = "connect" | "grpc" | "grpc-web";

export interface TransportOptions {
  protocol: ProtocolName;
  useBinaryFormat?: boolean;
  /** "1.1" is possible for Connect and gRPC-Web; gRPC needs HTTP/2. */
  httpVersion?: "1.1" | "2";
  gzip?: boolean;
  /** Without gzip: also refuse compressed responses (connect-node clients accept gzip and br by default). */
  identityOnly?: boolean;
}

export function transportFor(baseUrl: string, options: TransportOptions): Transport {
  const httpVersion = options.httpVersion ?? "2";
  const common = {
    baseUrl,
    interceptors: authInterceptors(baseUrl),
    useBinaryFormat: options.useBinaryFormat ?? true,
    // compressMinBytes 0: compress even the smallest message, so gzip is really exercised.
    ...(options.gzip ? { sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 } : {}),
    ...(!options.gzip && options.identityOnly ? { acceptCompression: [] } : {}),
  };
  switch (options.protocol) {
    case "connect":
      return createConnectTransport({ ...common, httpVersion });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, httpVersion });
    case "grpc":
      return createGrpcTransport({ ...common });
  }
}

export function clientFor<S extends DescService>(service: S, baseUrl: string, options: TransportOptions): Client<S> {
  return createClient(service, transportFor(baseUrl, options));
}
