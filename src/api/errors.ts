// Every error the server makes for reasons of its own, built in one place so that every
// denial of one kind looks the same on the wire. Each carries the google.rpc detail types that
// standard clients read (AIP-193): google.rpc.ErrorInfo always, google.rpc.BadRequest for a
// rejected field, google.rpc.PreconditionFailure for a FailedPrecondition. Validation errors come
// from the protovalidate interceptor with buf.validate.Violations; withGoogleDetails adds the
// same google.rpc details to those.
import { create, createRegistry } from "@bufbuild/protobuf";
import { AnySchema, anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema, type FieldPath, type Violation } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { BadRequestSchema, ErrorInfoSchema, PreconditionFailureSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema, type Status } from "../gen/google/rpc/status_pb.js";
import { PolicyDecisionSchema } from "../gen/agentmachine/v1/operation_pb.js";

const DOMAIN = "agentmachine.v1";

/** The reason of an InvalidArgument naming a request field (ours or protovalidate's). */
const INVALID_FIELD = "INVALID_FIELD";

/** A detail the server attaches (connect's OutgoingDetail). */
type Detail = Exclude<ConnectError["details"][number], { type: string }>;

function errorInfo(reason: string, metadata: Record<string, string>): Detail {
  return { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: DOMAIN, metadata }) };
}

/**
 * An error with its google.rpc.ErrorInfo; a FailedPrecondition also states the failed condition
 * as a google.rpc.PreconditionFailure, whose type is the reason and whose subject is the
 * resource the metadata names (the first value that is a resource name, `operations/…`), if any.
 */
export function errorWithInfo(code: Code, reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  const details = [errorInfo(reason, metadata)];
  if (code === Code.FailedPrecondition) {
    const subject = Object.values(metadata).find((value) => /^[a-zA-Z]+\/./.test(value)) ?? "";
    details.push({
      desc: PreconditionFailureSchema,
      value: create(PreconditionFailureSchema, { violations: [{ type: reason, subject, description: message }] }),
    });
  }
  return new ConnectError(message, code, undefined, details);
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

/** `spec.execution_start.argv[0]`, `labels["k"]`: a field path as AIP-193's BadRequest spells it. */
export function fieldPathText(path: FieldPath | undefined): string {
  return (path?.elements ?? [])
    .map(({ fieldName, subscript }) => {
      switch (subscript.case) {
        case undefined:
          return fieldName;
        case "stringKey":
          return `${fieldName}[${JSON.stringify(subscript.value)}]`;
        default:
          return `${fieldName}[${String(subscript.value)}]`;
      }
    })
    .join(".");
}

/** The google.rpc details of field violations: BadRequest naming each field, ErrorInfo naming the first. */
function fieldDetails(violations: readonly Violation[]): Detail[] {
  const fieldViolations = violations.map((violation) => ({ field: fieldPathText(violation.field), description: violation.message, reason: violation.ruleId }));
  return [
    errorInfo(INVALID_FIELD, { field: fieldViolations[0]?.field ?? "" }),
    { desc: BadRequestSchema, value: create(BadRequestSchema, { fieldViolations }) },
  ];
}

/**
 * A request field the server rejects for a reason its protovalidate rules cannot express. The
 * details have the same shape as a validation error's (withGoogleDetails), so clients handle
 * both alike.
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
  return new ConnectError(`${field}: ${message}`, Code.InvalidArgument, undefined, [
    { desc: ViolationsSchema, value: violations },
    ...fieldDetails(violations.violations),
  ]);
}

/**
 * `error` with google.rpc.BadRequest and ErrorInfo added when it carries buf.validate.Violations
 * only (the protovalidate interceptor's errors): a client that knows only google.rpc sees the
 * fields too.
 */
export function withGoogleDetails(error: ConnectError): ConnectError {
  const violations = error.findDetails(ViolationsSchema).flatMap((detail) => detail.violations);
  if (violations.length === 0 || error.findDetails(BadRequestSchema).length > 0) return error;
  error.details.push(...fieldDetails(violations));
  return error;
}

/**
 * Every detail type the server attaches to an error, for JSON writers of a google.rpc.Status
 * (EvaluatePolicyResponse.denial), whose Any details JSON spells out whole.
 */
export const errorDetailTypes = createRegistry(ErrorInfoSchema, BadRequestSchema, PreconditionFailureSchema, ViolationsSchema, PolicyDecisionSchema);

/** `error` as the google.rpc.Status a gRPC client gets: its code, message and details. */
export function statusOf(error: ConnectError): Status {
  return create(StatusSchema, {
    code: error.code,
    message: error.rawMessage,
    details: error.details.map((detail) =>
      "desc" in detail
        ? anyPack(detail.desc, create(detail.desc, detail.value))
        : create(AnySchema, { typeUrl: `type.googleapis.com/${detail.type}`, value: detail.value }),
    ),
  });
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
