// The decision an audit record states: allowed, with the policy decisions that let the command
// through, or denied, from the error the caller got.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AuditDecisionSchema } from "../gen/agentmachine/v1/audit_pb.js";
import type { PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { policyGates, type Gate } from "../model/policy-gates.js";
import { concealedDenial } from "../api/errors.js";

export type AuditDecisionInit = MessageInitShape<typeof AuditDecisionSchema>;

/** The codes of a denied attempt: the caller was not allowed, as opposed to asking wrongly. */
const denialCodes: ReadonlySet<Code> = new Set([Code.PermissionDenied, Code.Unauthenticated, Code.ResourceExhausted]);

/**
 * An allowed command. A command that passed several gates names them all, in the same order in
 * `gates` and (comma-separated) `rule` (every gate of a profile type reads the same bundle, so
 * `bundle_digest` is one digest).
 */
export function allowedDecision(policyDecisions: readonly PolicyDecision[] = []): AuditDecisionInit {
  return {
    allowed: true,
    gates: policyDecisions.map((d) => d.gate),
    rule: policyDecisions.map((d) => d.rule).join(","),
    bundleDigest: [...new Set(policyDecisions.map((d) => d.bundleDigest))].join(","),
  };
}

/**
 * The denial `error` states, if a call failing with it was denied (rather than asked wrongly),
 * also when the caller was told NotFound in its place (api/errors.ts, concealed).
 */
export function deniedDecision(error: unknown): AuditDecisionInit | undefined {
  const denial = concealedDenial(error) ?? error;
  return denial instanceof ConnectError && denialCodes.has(denial.code) ? denialOf(denial) : undefined;
}

/**
 * A denial, from the error that states it. Gate, rule and bundle digest come from the error's
 * ErrorInfo metadata (policy denials carry all three, separation rules their rule); the reason
 * is the error's message, which never holds a secret.
 */
export function denialOf(error: ConnectError): AuditDecisionInit {
  const metadata = error.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
  const gate = policyGates.get(metadata.gate as Gate);
  return {
    allowed: false,
    // connect's Code numbers the codes as google.rpc.Code does.
    denialCode: error.code as number,
    gates: gate === undefined ? [] : [gate],
    rule: metadata.rule ?? "",
    bundleDigest: metadata.bundle_digest ?? "",
    reason: error.rawMessage,
  };
}
