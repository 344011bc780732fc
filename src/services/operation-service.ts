// agentmachine.v1.OperationService: thin — decode, call the lifecycle domain, respond.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import {
  OperationFilterSchema,
  OperationService,
  SubmitOperationRequestSchema,
  type OperationFilter,
  type SubmitOperationRequest,
} from "../gen/agentmachine/v1/operation_service_pb.js";
import { admit, requestDigest } from "../lifecycle/admission.js";
import { eventsCompacted, illegalTransition, invalidPageToken, operationNotFound, profileAlreadyExists, requestIdConflict } from "../lifecycle/errors.js";
import type { EventHub } from "../lifecycle/event-hub.js";
import { matchesEventFilter } from "../lifecycle/event-filter.js";
import type { OperationRunner } from "../lifecycle/operation-runner.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import { subscribe } from "../lifecycle/subscription.js";
import { messageDigest } from "../lifecycle/message-digest.js";
import { isTerminal } from "../lifecycle/transitions.js";
import { withoutSecrets } from "../lifecycle/redact-operation.js";
import { cutOffWhenStalled } from "../server/raw-response.js";
import { principalOf } from "../server/auth-interceptor.js";
import { auditDraft } from "../server/audit-interceptor.js";
import { allowedDecision } from "../audit/decisions.js";
import { whileAuthorized } from "./while-authorized.js";
import type { Authority, Principal } from "../governance/authority.js";
import { canSeeProfile, requireOperation, requireProfile, visibleProfiles } from "../governance/scope.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { OperationStore } from "../store/store.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";

export interface OperationServiceDeps {
  store: OperationStore;
  hub: EventHub;
  runner: OperationRunner;
  pageTokens: PageTokens;
  defaultBudget: Budget;
  policy: PolicyEngine;
  /** The operation types this server has an executor for (admission refuses the others). */
  executable: ReadonlySet<OperationType>;
  workerSelectors: boolean;
  /** Set when executions cannot be sandboxed here: why. */
  sandboxUnavailable?: string;
  /** How often an idle WatchEvents stream gets a bookmark. */
  bookmarkIntervalMs: number;
  /** The period of the slow-subscriber check (src/server/raw-response.ts). */
  slowSubscriberTimeoutMs: number;
  authority: Authority;
}

const DEFAULT_PAGE_SIZE = 50;

/** Binds page tokens to their filter; equal filters digest alike whatever their label order. */
function filterDigest(filter: OperationFilter | undefined): string {
  return messageDigest(OperationFilterSchema, filter ?? create(OperationFilterSchema));
}

export function operationService(deps: OperationServiceDeps): ServiceImpl<typeof OperationService> {
  const { store, hub, runner } = deps;

  async function submit(request: SubmitOperationRequest, context: HandlerContext) {
    const principal = principalOf(context);
    // A retried submit is answered from the store before admission, which could now refuse it
    // (its cancel target may have finished, say) — but only to a caller who may see it.
    const previous = await store.findByRequestId(request.requestId);
    if (previous !== undefined) {
      requireProfile(principal, previous.operation.profile);
      if (previous.requestDigest !== requestDigest(request)) throw requestIdConflict(request.requestId, previous.operation.name);
      return { operation: previous.operation, created: false };
    }
    const admitted = await admit(request, { store, defaultBudget: deps.defaultBudget, principal, policy: deps.policy, executable: deps.executable, workerSelectors: deps.workerSelectors, ...(deps.sandboxUnavailable !== undefined ? { sandboxUnavailable: deps.sandboxUnavailable } : {}) });
    // The record commits with the operation; the store names it (resource) after the operation.
    admitted.audit = auditDraft(context, { decision: allowedDecision(admitted.operation.policyDecisions) });
    const result = await store.createOperation(admitted);
    switch (result.kind) {
      case "created":
        runner.enqueue(result.operation);
        return { operation: result.operation, created: true };
      case "existing":
        return { operation: result.operation, created: false };
      case "request-id-conflict":
        throw requestIdConflict(request.requestId, result.operation.name);
      case "profile-exists":
        throw profileAlreadyExists(result.profile);
    }
  }

  /** The operation, if it exists and the caller may see its profile. */
  async function visibleOperation(name: string, principal: Principal) {
    const operation = await store.getOperation(name);
    if (operation === undefined) throw operationNotFound(name);
    requireProfile(principal, operation.profile);
    return operation;
  }

  return {
    async submitOperation(request, context) {
      const { operation, created } = await submit(request, context);
      return { operation: withoutSecrets(operation), created };
    },

    async getOperation({ name }, context) {
      return { operation: withoutSecrets(await visibleOperation(name, principalOf(context))) };
    },

    async listOperations({ pageSize, pageToken, filter }, context) {
      const principal = principalOf(context);
      if (filter?.profile) requireProfile(principal, filter.profile);
      const digest = filterDigest(filter);
      const beforeName = pageToken === "" ? undefined : deps.pageTokens.read("ListOperations", pageToken, digest);
      if (pageToken !== "" && beforeName === undefined) throw invalidPageToken();
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      // One extra row tells whether another page exists.
      const rows = await store.listOperations({
        types: filter?.types,
        states: filter?.states,
        profile: filter?.profile || undefined,
        profiles: visibleProfiles(principal),
        labels: filter?.labels,
        beforeName,
        limit: limit + 1,
      });
      const operations = rows.slice(0, limit).map(withoutSecrets);
      const more = rows.length > limit;
      return { operations, nextPageToken: more ? deps.pageTokens.issue("ListOperations", operations[operations.length - 1]!.name, digest) : "" };
    },

    async cancelOperation({ name, reason }, context) {
      const principal = principalOf(context);
      const target = await visibleOperation(name, principal);
      requireOperation(principal, { type: OperationType.EXECUTION_CANCEL, profile: target.profile });
      // One cancel operation per target: cancelling again returns it while the target stops.
      const requestId = `cancel:${name.replace("operations/", "")}`;
      const previous = await store.findByRequestId(requestId);
      if (isTerminal(target.state)) throw illegalTransition(name, target.state, "cancel");
      const { operation } =
        previous ??
        (await submit(
          create(SubmitOperationRequestSchema, {
            requestId,
            profile: target.profile,
            spec: { spec: { case: "executionCancel", value: { target: name, reason } } },
          }),
          context,
        ));
      return { cancelOperation: operation, operation: withoutSecrets((await store.getOperation(name)) ?? target) };
    },

    async *watchOperation({ name, afterSequence }, context: HandlerContext) {
      const principal = principalOf(context);
      const operation = await visibleOperation(name, principal);
      if (isTerminal(operation.state)) {
        if (afterSequence >= operation.lastSequence) return;
        // Its remaining events were compacted: nothing would ever end the stream.
        const { oldest } = await store.eventBounds();
        if (operation.lastSequence < oldest) throw eventsCompacted(afterSequence, oldest);
      }
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal) {
        const items = subscribe(hub, store, {
          after: afterSequence,
          matches: (stored) => stored.event.operation === name,
          signal,
          bookmarkIntervalMs: 0,
          isLast: (stored) => isTerminal(stored.event.state),
        });
        for await (const item of cutOffWhenStalled(items, deps.slowSubscriberTimeoutMs, context)) {
          if (item.kind === "event") yield { event: item.stored.event };
        }
      });
    },

    async *watchEvents({ filter, afterSequence }, context: HandlerContext) {
      const principal = principalOf(context);
      if (filter?.profile) requireProfile(principal, filter.profile);
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal) {
        const items = subscribe(hub, store, {
          after: afterSequence,
          // A watcher sees only the profiles its delegation covers.
          matches: (stored) => canSeeProfile(principal, stored.profile) && matchesEventFilter(filter, stored),
          signal,
          bookmarkIntervalMs: deps.bookmarkIntervalMs,
        });
        for await (const item of cutOffWhenStalled(items, deps.slowSubscriberTimeoutMs, context)) {
          yield item.kind === "event"
            ? { kind: { case: "event" as const, value: item.stored.event } }
            : { kind: { case: "bookmark" as const, value: { sequence: item.sequence, time: timestampFromDate(new Date()) } } };
        }
      });
    },
  };
}
