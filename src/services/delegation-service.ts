// agentmachine.v1.DelegationService: thin — the caller's principal, the attenuation rule, the
// store, and the server key that signs children.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { monotonicFactory } from "ulid";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { DelegationSchema, type Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import { type DelegationService, IssueDelegationRequestSchema, ListDelegationsRequestSchema } from "../gen/agentmachine/v1/delegation_service_pb.js";
import { widening } from "../governance/attenuation.js";
import { type Authority, delegationName, inactiveReason, type Principal } from "../governance/authority.js";
import { remainingOf } from "../governance/carving.js";
import { signCredential, type SigningKey } from "../governance/credentials.js";
import { outOfScope } from "../governance/errors.js";
import { allowedDecision } from "../audit/decisions.js";
import { createKey, keyedResult } from "../lifecycle/idempotency.js";
import { messageDigest } from "../lifecycle/message-digest.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import { errorWithInfo } from "../api/errors.js";
import type { StoreAccounts, StoreDelegations } from "../store/store.js";

export interface DelegationServiceDeps {
  store: StoreDelegations & StoreAccounts;
  authority: Authority;
  serverKey: SigningKey;
  pageTokens: PageTokens;
  /** Cancels running operations admitted under any of these delegations. */
  cancelOperationsUnder(names: ReadonlySet<string>): Promise<void>;
}

const nextId = monotonicFactory();

const DEFAULT_PAGE_SIZE = 50;

/** The position a ListDelegations page token holds (`{depth} {name}`, as the service issued it). */
function subtreePosition(position: string): { depth: number; name: string } {
  const [depth, name] = position.split(" ");
  return { depth: Number(depth), name: name! };
}

function notInSubtree(name: string) {
  return errorWithInfo(Code.NotFound, "DELEGATION_NOT_FOUND", `${name} does not exist or is not below the caller's delegation`, { delegation: name });
}

export function delegationService(deps: DelegationServiceDeps): ServiceImpl<typeof DelegationService> {
  const { store } = deps;

  /** `name` if it is the caller's delegation or a descendant of it. */
  async function inSubtree(principal: Principal, name: string) {
    for (
      let current = await store.getDelegation(name);
      current !== undefined;
      current = current.parent ? await store.getDelegation(current.parent) : undefined
    ) {
      if (current.name === principal.delegation.name) return store.getDelegation(name);
    }
    throw notInSubtree(name);
  }

  /** What each delegation can still give (src/governance/carving.ts), by name. */
  async function remainingBudgets(delegations: readonly Delegation[]): Promise<Record<string, Budget>> {
    const now = new Date();
    const accounts = await store.readAccounts(delegations.map((d) => d.name));
    return Object.fromEntries(delegations.map((d, i) => [d.name, remainingOf(d.scope?.budget, accounts[i]!.children, accounts[i]!.held, now)]));
  }

  return {
    async issueDelegation(request, context) {
      const { subject, scope, ttl, requestId } = request;
      const principal = principalOf(context);
      const parent = principal.delegation;
      if (!parent.scope!.mayDelegate) throw outOfScope("may_delegate", "it may not issue delegations", parent.name);
      const now = new Date();
      const parentExpiry = timestampDate(parent.expireTime!);
      const asked = ttl ? new Date(now.getTime() + Number(ttl.seconds) * 1000 + Math.floor(ttl.nanos / 1e6)) : parentExpiry;
      const child = create(DelegationSchema, {
        name: delegationName(nextId()),
        subject,
        parent: parent.name,
        scope,
        notBefore: timestampFromDate(now),
        // Never past the parent's expiry.
        expireTime: timestampFromDate(asked < parentExpiry ? asked : parentExpiry),
        keyId: deps.serverKey.keyId,
        createTime: timestampFromDate(now),
      });
      // The budget is carved out of what the parent's other children and operations have not taken, checked
      // and recorded in one commit so concurrent issues cannot overspend it; a retry (the same request_id)
      // carves nothing and gets the child its first request made.
      const written = await store.putChildDelegation(
        child,
        (siblings, parentHeld) => {
          const found = widening(scope!, parent.scope!, remainingOf(parent.scope!.budget, siblings, parentHeld, now));
          return found && outOfScope(found.axis, found.detail, parent.name);
        },
        auditDraft(context, { decision: allowedDecision() }),
        createKey(principal, "IssueDelegation", IssueDelegationRequestSchema, request),
      );
      const { value: stored, created } = await keyedResult(written, requestId, "delegation", (name) => store.getDelegation(name));
      // The credential is never stored: a retry signs the same claims again (src/governance/credentials.ts).
      const token = await signCredential(deps.serverKey, {
        id: stored.name.replace("delegations/", ""),
        subject: stored.subject,
        parent: stored.parent.replace("delegations/", ""),
        scope: stored.scope!,
        notBefore: timestampDate(stored.notBefore!),
        expires: timestampDate(stored.expireTime!),
        issuedAt: timestampDate(stored.createTime!),
      });
      return { delegation: stored, token, created };
    },

    async revokeDelegation({ name, reason }, context) {
      const principal = principalOf(context);
      const target = await inSubtree(principal, name);
      const revoked = await store.revokeDelegationSubtree(
        name,
        new Date(),
        reason || `revoked by ${principal.delegation.name}`,
        auditDraft(context, { decision: allowedDecision() }),
      );
      const names = new Set(revoked.map((d) => d.name));
      deps.authority.revoked(names);
      await deps.cancelOperationsUnder(names);
      return { delegation: (await store.getDelegation(name)) ?? target, revokedCount: revoked.length };
    },

    async getDelegation({ name }, context) {
      const delegation = await inSubtree(principalOf(context), name);
      return { delegation, ...(delegation ? { remainingBudget: (await remainingBudgets([delegation]))[name] } : {}) };
    },

    async listDelegations({ includeInactive, pageSize, pageToken }, context) {
      const now = new Date();
      const root = principalOf(context).delegation.name;
      // A token holds a position in this caller's subtree listing, so it is bound to the caller too.
      const digest = `${root} ${messageDigest(ListDelegationsRequestSchema, create(ListDelegationsRequestSchema, { includeInactive }))}`;
      const position = deps.pageTokens.requestedPosition("ListDelegations", pageToken, digest);
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      const rows = await store.listDelegationSubtree(root, {
        ...(position !== undefined ? { after: subtreePosition(position) } : {}),
        ...(includeInactive ? {} : { activeAt: now }),
        limit: limit + 1,
      });
      const { items, nextPageToken } = deps.pageTokens.page("ListDelegations", rows, limit, (last) => `${last.depth} ${last.delegation.name}`, digest);
      // The store filters on revocation and expiry; a delegation not valid yet is left out here.
      const delegations = items.map((entry) => entry.delegation).filter((d) => includeInactive || inactiveReason(d, now) === undefined);
      return { delegations, remainingBudgets: await remainingBudgets(delegations), nextPageToken };
    },

    whoAmI(_request, context) {
      const { delegation, chain } = principalOf(context);
      return { delegation, chain };
    },
  };
}
