// Idempotency keys: a submit's request_id is unique within a scope, never across the store, so
// that one caller can neither collide with another's key nor learn anything from it (as request
// ids are per namespace in Temporal and idempotency keys per account at Stripe).
//
// - A client's key is scoped to the caller's delegation: the delegation its credential names
//   (`delegations/{id}`), which is one delegation chain. A retry must come under the same
//   delegation; two delegations, a parent and its child included, never share keys. (An
//   execution credential is a delegation of its own, per attempt, and may submit nothing.)
// - The server's own keys (CancelOperation's one cancel per target) are scoped to SERVER_SCOPE,
//   which is no delegation name, so no client can write a key there.
// - Rows stored before keys were scoped carry LEGACY_IDEMPOTENCY_SCOPE (store migrations); such
//   a row answers a key only if it is what the key names (`owns`): for a client, an operation its
//   own delegation admitted; for the server's cancel key, a cancel of that target.
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { Principal } from "../governance/authority.js";
import { LEGACY_IDEMPOTENCY_SCOPE, type OperationStore } from "../store/store.js";

/** The scope of the keys the server derives itself. */
export const SERVER_SCOPE = "server";

export interface IdempotencyKey {
  scope: string;
  requestId: string;
  /** Whether a stored operation is the one this key names (checked on every row found, legacy or not). */
  owns(operation: Operation): boolean;
}

/** The key of a client's submit: its request_id, in the scope of the caller's delegation. */
export function clientKey(principal: Principal, requestId: string): IdempotencyKey {
  const scope = principal.delegation.name;
  return { scope, requestId, owns: (operation) => operation.delegation === scope };
}

/** The key of the one cancel operation CancelOperation makes for `target` (`operations/{id}`). */
export function cancelKey(target: string): IdempotencyKey {
  return {
    scope: SERVER_SCOPE,
    requestId: `cancel:${target.replace("operations/", "")}`,
    owns: (operation) =>
      operation.type === OperationType.EXECUTION_CANCEL && operation.spec?.kind.case === "executionCancel" && operation.spec.kind.value.target === target,
  };
}

/** The operation submitted under `key`, in its scope or from before scopes, if it is the one the key names. */
export async function findSubmitted(store: OperationStore, key: IdempotencyKey): Promise<{ operation: Operation; requestDigest: string } | undefined> {
  for (const scope of [key.scope, LEGACY_IDEMPOTENCY_SCOPE]) {
    const found = await store.findByRequestId(scope, key.requestId);
    if (found !== undefined && key.owns(found.operation)) return found;
  }
  return undefined;
}
