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
// - IssueDelegation's and ApplyPolicyBundle's keys are scoped the same way, per RPC besides
//   (the store's RequestKey): a key of one RPC never answers another. Their request_id is
//   optional (AIP-155): without one, every call creates.
// - Rows stored before keys were scoped carry LEGACY_IDEMPOTENCY_SCOPE (store migrations); such
//   a row answers a key only if it is what the key names (`owns`): for a client, an operation its
//   own delegation admitted; for the server's cancel key, a cancel of that target.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { Principal } from "../governance/authority.js";
import { type KeyedCreate, LEGACY_IDEMPOTENCY_SCOPE, type RequestKey, type StoreOperations } from "../store/store.js";
import { operationIdOf } from "../model/resource-names.js";
import { requestIdConflict } from "./errors.js";
import { messageDigest } from "./message-digest.js";

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
    requestId: `cancel:${operationIdOf(target)}`,
    owns: (operation) =>
      operation.type === OperationType.EXECUTION_CANCEL && operation.spec?.kind.case === "executionCancel" && operation.spec.kind.value.target === target,
  };
}

/** The operation submitted under `key`, in its scope or from before scopes, if it is the one the key names. */
export async function findSubmitted(store: StoreOperations, key: IdempotencyKey): Promise<{ operation: Operation; requestDigest: string } | undefined> {
  for (const scope of [key.scope, LEGACY_IDEMPOTENCY_SCOPE]) {
    const found = await store.findByRequestId(scope, key.requestId);
    if (found !== undefined && key.owns(found.operation)) return found;
  }
  return undefined;
}

/**
 * The key of an IssueDelegation or ApplyPolicyBundle request (`rpc`), in the scope of the
 * caller's delegation, with the digest of the request without its request_id; undefined when
 * the request has none.
 */
export function createKey<Desc extends DescMessage>(
  principal: Principal,
  rpc: "IssueDelegation" | "ApplyPolicyBundle",
  schema: Desc,
  request: MessageShape<Desc> & { requestId: string },
): RequestKey | undefined {
  if (request.requestId === "") return undefined;
  return { scope: principal.delegation.name, rpc, requestId: request.requestId, requestDigest: messageDigest(schema, { ...request, requestId: "" }) };
}

/**
 * What a keyed create answers: what it made, or for a retry what the key's first create made
 * (read by name, as stored now). A key reused with another request is AlreadyExists, as
 * SubmitOperation's; `field` names the resource in the error's metadata.
 */
export async function keyedResult<T>(
  result: KeyedCreate<T>,
  requestId: string,
  field: string,
  read: (name: string) => Promise<T | undefined>,
): Promise<{ value: T; created: boolean }> {
  if (result.kind === "created") return { value: result.value, created: true };
  if (result.kind === "request-id-conflict") throw requestIdConflict(requestId, result.name, field);
  const value = await read(result.name);
  // Delegations and bundles are never deleted.
  if (value === undefined) throw new Error(`request_id ${requestId} names ${result.name}, which is not stored`);
  return { value, created: false };
}
