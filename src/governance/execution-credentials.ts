// Execution credentials: each attempt of an execution gets its own child of the delegation
// that admitted it, bound to the operation (Delegation.operation) and to the attempt (its
// subject, `operations/{id}/attempts/{n}`, see attemptSubject). It can submit nothing and
// delegate nothing; RuntimeService accepts it only for its own operation. It expires when the
// task's wall-clock budget is over (plus a minute of grace), and is revoked when the attempt
// ends — so a process that outlives its task holds nothing.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { monotonicFactory } from "ulid";
import { DelegationSchema } from "../gen/agentmachine/v1/delegation_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { StoreDelegations } from "../store/store.js";
import { delegationName } from "./authority.js";
import { signCredential, type SigningKey } from "./credentials.js";

const nextId = monotonicFactory();

/** The subject of an attempt's credential: RuntimeService accepts it only during that attempt. */
export function attemptSubject(operation: Pick<Operation, "name" | "attempt">): string {
  return `${operation.name}/attempts/${operation.attempt}`;
}
const GRACE_MS = 60_000;

export interface ExecutionCredential {
  delegation: string;
  token: string;
}

export class ExecutionCredentials {
  constructor(
    private readonly store: StoreDelegations,
    private readonly serverKey: SigningKey,
  ) {}

  /** Issues the credential of one attempt; undefined when the admitting delegation is gone (the task cannot act). */
  async issue(operation: Operation): Promise<ExecutionCredential | undefined> {
    const parent = await this.store.getDelegation(operation.delegation);
    if (parent === undefined || parent.revokeTime !== undefined) return undefined;
    const now = new Date();
    const wallClockMs = Number(operation.requestedBudget?.wallClockSeconds ?? 0n) * 1000;
    const parentExpiry = timestampDate(parent.expireTime!);
    const wanted = new Date(now.getTime() + wallClockMs + GRACE_MS);
    const expires = wanted < parentExpiry ? wanted : parentExpiry;
    if (expires <= now) return undefined;
    const id = nextId();
    const delegation = create(DelegationSchema, {
      name: delegationName(id),
      subject: attemptSubject(operation),
      parent: parent.name,
      scope: { profiles: [operation.profile], tools: parent.scope!.tools, modelProviders: parent.scope!.modelProviders },
      notBefore: timestampFromDate(now),
      expireTime: timestampFromDate(expires),
      keyId: this.serverKey.keyId,
      createTime: timestampFromDate(now),
      operation: operation.name,
    });
    await this.store.putDelegation(delegation);
    const token = await signCredential(this.serverKey, {
      id,
      subject: attemptSubject(operation),
      parent: parent.name.replace("delegations/", ""),
      scope: delegation.scope!,
      notBefore: now,
      expires,
    });
    return { delegation: delegation.name, token };
  }

  /** Revokes an attempt's credential when the attempt ends. */
  async retire(credential: ExecutionCredential): Promise<ReadonlySet<string>> {
    const revoked = await this.store.revokeDelegationSubtree(credential.delegation, new Date(), "the execution attempt ended");
    return new Set(revoked.map((d) => d.name));
  }
}
