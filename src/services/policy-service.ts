// agentmachine.v1.PolicyService: dry runs, the bundles in force, and changing a bundle (itself
// authorized: the caller's delegation must list the profile type in policy_profile_types).
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { PolicyDecisionSchema, type PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import { ApplyPolicyBundleRequestSchema, type PolicyService } from "../gen/agentmachine/v1/policy_service_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { ProfileType, type OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../model/mapping.js";
import { decideCall } from "../governance/call-decision.js";
import { policyChangeNotAllowed } from "../governance/errors.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";
import type { GrantIndex } from "../governance/grant-index.js";
import { admit } from "../lifecycle/admission.js";
import { createKey, keyedResult } from "../lifecycle/idempotency.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import { allowedDecision } from "../audit/decisions.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import { statusOf } from "../api/errors.js";
import type { StoreAccounts, StoreBundles, StoreOperations } from "../store/store.js";

export interface PolicyServiceDeps {
  store: StoreOperations & StoreAccounts & StoreBundles;
  policy: PolicyEngine;
  grants: GrantIndex;
  defaultBudget: Budget;
  /** The operation types this server has an executor for (a dry run refuses the others, as admission does). */
  executable: ReadonlySet<OperationType>;
  workerSelectors: boolean;
  /** Set when executions cannot be sandboxed here: why. */
  sandboxUnavailable?: string;
  /** The server's data dir, which no mount may reach. */
  dataDir: string;
  pageTokens: PageTokens;
}

const DEFAULT_PAGE_SIZE = 50;

/** The answer for a denial: the decisions it carries and the status the call would fail with, as the client would see them. */
function denialAnswer(error: ConnectError, decisions: PolicyDecision[]) {
  return {
    allowed: false,
    decisions: decisions.length > 0 ? decisions : error.findDetails(PolicyDecisionSchema),
    denial: statusOf(error),
  };
}

export function policyService(deps: PolicyServiceDeps): ServiceImpl<typeof PolicyService> {
  return {
    async evaluatePolicy({ subject }, context) {
      const principal = principalOf(context);
      if (subject.case === "operation") {
        try {
          const admitted = await admit(subject.value, { ...deps, principal });
          const { reservation } = admitted;
          const refusal = reservation?.check(await deps.store.readAccounts(reservation.accounts));
          if (refusal !== undefined) return denialAnswer(ConnectError.from(refusal), admitted.operation.policyDecisions);
          return { allowed: true, decisions: admitted.operation.policyDecisions };
        } catch (error) {
          if (error instanceof ConnectError && error.code !== Code.InvalidArgument) return denialAnswer(error, []);
          throw error;
        }
      }
      const { profile, call } = subject.value!;
      const verdict = await decideCall(deps, principal, profile, call!);
      return verdict.denial === undefined ? { allowed: true, decisions: verdict.decisions } : denialAnswer(verdict.denial, verdict.decisions);
    },

    async listPolicyBundles({ pageSize, pageToken }) {
      const after = deps.pageTokens.requestedPosition("ListPolicyBundles", pageToken, "");
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      const rows = await deps.store.listPolicyBundles({ after: after === undefined ? ProfileType.UNSPECIFIED : Number(after), limit: limit + 1 });
      const { items, nextPageToken } = deps.pageTokens.page("ListPolicyBundles", rows, limit, (last) => String(last.profileType), "");
      return { bundles: items, nextPageToken };
    },

    async applyPolicyBundle(request, context) {
      const { profileType, source, requestId } = request;
      const principal = principalOf(context);
      if (!principal.delegation.scope!.policyProfileTypes.includes(profileType)) {
        throw policyChangeNotAllowed(profileTypeNames.get(profileType) ?? String(profileType), principal.delegation.name);
      }
      const key = createKey(principal, "ApplyPolicyBundle", ApplyPolicyBundleRequestSchema, request);
      const written = await deps.policy.apply(profileType, source, principal.delegation.name, auditDraft(context, { decision: allowedDecision() }), key);
      const { value: bundle, created } = await keyedResult(written, requestId, "policy_bundle", (name) => deps.store.getPolicyBundle(name));
      return { bundle, created };
    },
  };
}
