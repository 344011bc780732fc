// The answer to a path we do not serve, in the caller's protocol: gRPC and gRPC-Web get a
// trailers-only response with grpc-status 12 (UNIMPLEMENTED), as a gRPC server sends; anything
// else gets the Connect protocol's HTTP 404 with code "unimplemented".
import type { connectNodeAdapter } from "@connectrpc/connect-node";

/** What the Connect adapter calls for a path that is no RPC. */
export type Fallback = NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>;

const UNIMPLEMENTED = "12";

export const answerUnknownRoute: Fallback = (req, res) => {
  const contentType = String(req.headers["content-type"] ?? "");
  const message = `no such method: ${req.url ?? ""}`;
  if (/^application\/grpc(-web)?(\+|;|$)/.test(contentType)) {
    res.writeHead(200, {
      "content-type": contentType,
      "grpc-status": UNIMPLEMENTED,
      "grpc-message": encodeURIComponent(message),
    });
    res.end();
    return;
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end(JSON.stringify({ code: "unimplemented", message }));
};
