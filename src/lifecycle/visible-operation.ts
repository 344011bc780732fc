// The one read of an operation that a caller names. An operation in a profile the caller may not
// see is answered exactly as one that does not exist — NotFound, the same message, the same
// detail — so that no RPC tells a caller what exists outside its scope (AIP-211; README, Errors).
// The audit log still records the denial it was (api/errors.ts, concealed).
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { Principal } from "../governance/authority.js";
import { profileDenial } from "../governance/scope.js";
import { concealed } from "../api/errors.js";
import type { StoreOperations } from "../store/store.js";
import { operationNotFound } from "./errors.js";

export async function visibleOperation(store: StoreOperations, principal: Principal, name: string): Promise<Operation> {
  const operation = await store.getOperation(name);
  if (operation === undefined) throw operationNotFound(name);
  const denial = profileDenial(principal, operation.profile);
  if (denial !== undefined) throw concealed(operationNotFound(name), denial);
  return operation;
}
