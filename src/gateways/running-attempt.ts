// Who may use a gateway (the egress proxy, the MCP gateway): only the credential of a running
// attempt, for that attempt's own operation. A caller's other credentials (a root, a child
// delegation) and the credential of an ended or earlier attempt are refused, because what a
// gateway charges and audits belongs to one running execution.
import { ConnectError } from "@connectrpc/connect";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Authority, Principal } from "../governance/authority.js";
import { attemptSubject } from "../governance/execution-credentials.js";
import type { StoreOperations } from "../store/store.js";

/** Why a credential may not use a gateway: not a valid credential at all, or not a running attempt's. */
export class AttemptRefusal extends Error {
  constructor(
    readonly kind: "unauthenticated" | "not-an-attempt",
    message: string,
  ) {
    super(message);
  }
}

/** The running attempt `token` is the credential of; throws AttemptRefusal otherwise. */
export async function runningAttempt(authority: Authority, store: StoreOperations, token: string): Promise<{ principal: Principal; operation: Operation }> {
  let principal: Principal;
  try {
    principal = await authority.authenticate(token);
  } catch (error) {
    throw new AttemptRefusal("unauthenticated", error instanceof ConnectError ? error.rawMessage : "invalid credential");
  }
  const name = principal.delegation.operation;
  const operation = name === "" ? undefined : await store.getOperation(name);
  if (operation === undefined || principal.delegation.subject !== attemptSubject(operation) || operation.state !== TaskState.RUNNING) {
    throw new AttemptRefusal("not-an-attempt", "only a running execution's own credential may use this gateway");
  }
  return { principal, operation };
}
