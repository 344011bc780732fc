// Every error the server makes for reasons of its own, built in one place so that every
// denial of one kind looks the same on the wire. Validation errors come from the protovalidate
// interceptor (buf.validate.Violations); the factories here attach agentmachine.v1.ErrorInfo.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/agentmachine/v1/errors_pb.js";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

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

/** A status code as gRPC spells it: `PERMISSION_DENIED`. */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The server is shutting down: the client should retry elsewhere or later. */
export function shuttingDown(): ConnectError {
  return errorWithInfo(Code.Unavailable, "SHUTTING_DOWN", "server is shutting down");
}

/**
 * A request field the server rejects for a reason its protovalidate rules cannot express. The
 * detail has the same shape as the validation interceptor's, so clients handle both alike.
 */
export function invalidField(field: string, message: string): ConnectError {
  const violations = create(ViolationsSchema, {
    violations: [
      {
        field: { elements: field.split(".").map((fieldName) => ({ fieldName })) },
        ruleId: "agentmachine.server",
        message,
      },
    ],
  });
  return new ConnectError(`${field}: ${message}`, Code.InvalidArgument, undefined, [{ desc: ViolationsSchema, value: violations }]);
}

/** The denials that concealing answers stand for (see concealed). */
const concealedDenials = new WeakMap<ConnectError, ConnectError>();

/**
 * `answer`, which the caller gets in place of `denial` (an operation out of its scope is NotFound,
 * as if it did not exist), remembering `denial` for the audit log: an operator still sees the
 * denial that happened (src/audit/decisions.ts).
 */
export function concealed(answer: ConnectError, denial: ConnectError): ConnectError {
  concealedDenials.set(answer, denial);
  return answer;
}

/** The denial `error` conceals, if it is a concealing answer. */
export function concealedDenial(error: unknown): ConnectError | undefined {
  return error instanceof ConnectError ? concealedDenials.get(error) : undefined;
}
