// Every error the server makes for reasons of its own, built in one place so that every
// denial of one kind looks the same on the wire. Validation errors come from the protovalidate
// interceptor (buf.validate.Violations); the factories here attach agentmachine.v1.ErrorInfo.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/agentmachine/v1/errors_pb.js";

const DOMAIN = "agentmachine.v1";

export function errorWithInfo(
  code: Code,
  reason: string,
  message: string,
  metadata: Record<string, string> = {},
): ConnectError {
  return new ConnectError(message, code, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: DOMAIN, metadata }) },
  ]);
}

/**
 * An unexpected failure. The message names only the request id: the original error (which may
 * hold a path, a stack or a secret) goes to the log under the same id.
 */
export function internalError(requestId: string): ConnectError {
  return errorWithInfo(Code.Internal, "INTERNAL", `internal error; request id ${requestId}`, {
    request_id: requestId,
  });
}

/** The server is shutting down: the client should retry elsewhere or later. */
export function shuttingDown(): ConnectError {
  return errorWithInfo(Code.Unavailable, "SHUTTING_DOWN", "server is shutting down");
}
