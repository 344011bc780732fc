// agentmachine.v1.OperationService: thin — decode, call the lifecycle domain, respond.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { create, toBinary } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import {
  OperationFilterSchema,
  type OperationService,
  SubmitOperationRequestSchema,
  type EventFilter,
  EventFilterSchema,
  type OperationFilter,
  type SubmitOperationRequest,
  type WatchEventsResponse,
  WatchEventsResponseSchema,
  WatchOperationResponseSchema,
} from "../gen/agentmachine/v1/operation_service_pb.js";
import { admit, requestDigest } from "../lifecycle/admission.js";
import { eventsCompacted, requestIdConflict } from "../lifecycle/errors.js";
import { profileAlreadyExists } from "../governance/errors.js";
import { cancelKey, clientKey, findSubmitted, type IdempotencyKey } from "../lifecycle/idempotency.js";
import { visibleOperation } from "../lifecycle/visible-operation.js";
import type { EventHub } from "../lifecycle/event-hub.js";
import { eventFilterIndex, eventSelection, matchesEventFilter } from "../lifecycle/event-filter.js";
import { answersInBinary, directDelivery, withEncodedEvent } from "./encoded-events.js";
import { HistoryReader, type PageBounds } from "../lifecycle/history-replay.js";
import type { ReplayScheduler } from "../model/replay-scheduler.js";
import type { RetentionFloor } from "../lifecycle/retention-floor.js";
import type { OperationRunner } from "../lifecycle/operation-runner.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import { subscribe } from "../lifecycle/subscription.js";
import { messageDigest } from "../lifecycle/message-digest.js";
import { isTerminal } from "../model/transitions.js";
import { requireNotEnded } from "../lifecycle/cancel-target.js";
import { withoutSecrets } from "../lifecycle/redact-operation.js";
import { noteOperation } from "../telemetry/tracer.js";
import { cutOffWhenStalled, StallGuard } from "../call/raw-request.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import { allowedDecision } from "../audit/decisions.js";
import { whileAuthorized } from "./while-authorized.js";
import type { Authority, Principal } from "../governance/authority.js";
import { canSeeProfile, requireOperation, requireProfile, visibleProfiles } from "../governance/scope.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { isExecution } from "../model/execution-types.js";
import type { CreateResult, StoreAccounts, StoreEvents, StoredEvent, StoreOperations } from "../store/store.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";
import type { PlaneMetrics } from "../metrics/plane-metrics.js";

export interface OperationServiceDeps {
  store: StoreOperations & StoreEvents & StoreAccounts;
  hub: EventHub;
  /** The server's turns for history pages, shared by every replay. */
  replays: ReplayScheduler;
  replayPages: PageBounds;
  retention: RetentionFloor;
  runner: OperationRunner;
  pageTokens: PageTokens;
  defaultBudget: Budget;
  policy: PolicyEngine;
  /** The operation types this server has an executor for (admission refuses the others). */
  executable: ReadonlySet<OperationType>;
  workerSelectors: boolean;
  /** Set when executions cannot be sandboxed here: why. */
  sandboxUnavailable?: string;
  /** The server's data dir, which no mount may reach. */
  dataDir: string;
  /** How often an idle WatchEvents stream gets a bookmark. */
  bookmarkIntervalMs: number;
  /** The period of the slow-subscriber check (src/call/raw-request.ts). */
  slowSubscriberTimeoutMs: number;
  authority: Authority;
  /** Set when the server keeps metrics: watch streams are counted. */
  metrics?: PlaneMetrics;
  /** Before an execution or container is stored: room under the workspaces' disk limit, else ResourceExhausted (src/lifecycle/workspace-keeper.ts). */
  workspaceRoom?: () => Promise<void>;
}

const DEFAULT_PAGE_SIZE = 50;

/** Binds page tokens to their filter; equal filters digest alike whatever their label order. */
function filterDigest(filter: OperationFilter | undefined): string {
  return messageDigest(OperationFilterSchema, filter ?? create(OperationFilterSchema));
}

// A watch stream's filters, made by functions rather than as named closures in the handler: a
// watch holds them for hours, and under tsx each named closure made per call costs a property
// dictionary (see src/lifecycle/subscription.ts's Subscriber).

/** The events of operation `name`. */
function ofOperation(name: string): (stored: StoredEvent) => boolean {
  return (stored) => stored.event.operation === name;
}

/** Whether the event ends its operation (WatchOperation's last). */
function endsOperation(stored: StoredEvent): boolean {
  return isTerminal(stored.event.state);
}

/** The events `filter` selects of those `principal` may see. */
function visibleMatches(principal: Principal, filter: EventFilter | undefined): (stored: StoredEvent) => boolean {
  return (stored) => canSeeProfile(principal, stored.profile) && matchesEventFilter(filter, stored);
}

/**
 * Equal for WatchEvents calls whose events are the same: `filter` (its encoding; equal filters
 * whose labels were set in another order only share nothing) seen by a caller who may see
 * `visible` profiles (visibleMatches decides by these two alone).
 */
function eventFilterKey(filter: EventFilter | undefined, visible: readonly string[] | undefined): string {
  const encoded = filter === undefined ? "" : Buffer.from(toBinary(EventFilterSchema, filter)).toString("base64");
  return `events ${JSON.stringify(visible ?? null)} ${encoded}`;
}

/** WatchEvents' bookmark at `sequence`: the message yielded for it, or written directly (encoded-events.ts). */
function bookmarkResponse(sequence: bigint): { schema: typeof WatchEventsResponseSchema; message: WatchEventsResponse } {
  const message = create(WatchEventsResponseSchema, { kind: { case: "bookmark", value: { sequence, time: timestampFromDate(new Date()) } } });
  return { schema: WatchEventsResponseSchema, message };
}

export function operationService(deps: OperationServiceDeps): ServiceImpl<typeof OperationService> {
  const { store, hub, runner } = deps;
  const sources = { hub, store, retention: deps.retention, replays: deps.replays, history: new HistoryReader(store, deps.replays, deps.replayPages) };

  /**
   * Admits `request` and stores it under `key`. A retried submit is answered from the store
   * before admission, which could now refuse it (its cancel target may have finished, say).
   */
  async function admitAndStore(request: SubmitOperationRequest, key: IdempotencyKey, context: HandlerContext): Promise<CreateResult> {
    const previous = await findSubmitted(store, key);
    if (previous !== undefined) {
      return previous.requestDigest === requestDigest(request)
        ? { kind: "existing", operation: previous.operation }
        : { kind: "request-id-conflict", operation: previous.operation };
    }
    const admitted = await admit(request, {
      store,
      defaultBudget: deps.defaultBudget,
      principal: principalOf(context),
      policy: deps.policy,
      executable: deps.executable,
      workerSelectors: deps.workerSelectors,
      dataDir: deps.dataDir,
      ...(deps.sandboxUnavailable !== undefined ? { sandboxUnavailable: deps.sandboxUnavailable } : {}),
    });
    if (isExecution(admitted.operation.type)) await deps.workspaceRoom?.();
    // The record commits with the operation; the store names it (resource) after the operation.
    admitted.audit = auditDraft(context, { decision: allowedDecision(admitted.operation.policyDecisions) });
    const result = await store.createOperation({ ...admitted, idempotencyScope: key.scope });
    if (result.kind === "created") runner.enqueue(result.operation);
    return result;
  }

  /** The one cancel operation of `target` (under the server's own key), made now if there is none yet. */
  async function cancelOf(target: Operation, reason: string, context: HandlerContext): Promise<Operation> {
    const key = cancelKey(target.name);
    const request = create(SubmitOperationRequestSchema, {
      requestId: key.requestId,
      profile: target.profile,
      spec: { kind: { case: "executionCancel", value: { target: target.name, reason } } },
    });
    const result = await admitAndStore(request, key, context);
    // A concurrent CancelOperation may have made it first, with another reason: it is still the one.
    if (result.kind === "profile-exists" || !key.owns(result.operation))
      throw new Error(`${key.requestId} in the server's scope is not a cancel of ${target.name}`);
    return result.operation;
  }

  /** The operation, if it exists and the caller may see its profile (else NotFound, as if it did not exist). */
  const visible = (name: string, context: HandlerContext) => {
    noteOperation(name);
    return visibleOperation(store, principalOf(context), name);
  };

  return {
    async submitOperation(request, context) {
      const result = await admitAndStore(request, clientKey(principalOf(context), request.requestId), context);
      switch (result.kind) {
        case "created":
        case "existing":
          noteOperation(result.operation.name);
          return { operation: withoutSecrets(result.operation), created: result.kind === "created" };
        case "request-id-conflict":
          throw requestIdConflict(request.requestId, result.operation.name);
        case "profile-exists":
          throw profileAlreadyExists(result.profile);
      }
    },

    async getOperation({ name }, context) {
      return { operation: withoutSecrets(await visible(name, context)) };
    },

    async listOperations({ pageSize, pageToken, filter }, context) {
      const principal = principalOf(context);
      if (filter?.profile) requireProfile(principal, filter.profile);
      const digest = filterDigest(filter);
      const beforeName = deps.pageTokens.requestedPosition("ListOperations", pageToken, digest);
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
      const target = await visible(name, context);
      requireOperation(principalOf(context), { type: OperationType.EXECUTION_CANCEL, profile: target.profile });
      requireNotEnded(target);
      // One cancel operation per target: cancelling again returns it while the target stops.
      const cancel = await cancelOf(target, reason, context);
      return { cancelOperation: cancel, operation: withoutSecrets((await store.getOperation(name)) ?? target) };
    },

    async *watchOperation({ name, afterSequence }, context: HandlerContext) {
      const principal = principalOf(context);
      const operation = await visible(name, context);
      if (isTerminal(operation.state)) {
        if (afterSequence >= operation.lastSequence) return;
        // Its remaining events were compacted: nothing would ever end the stream.
        const { oldest } = deps.retention;
        if (operation.lastSequence < oldest) throw eventsCompacted(afterSequence, oldest);
      }
      const binary = answersInBinary(context);
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal) {
        const guard = new StallGuard(context, deps.slowSubscriberTimeoutMs, deps.metrics);
        const items = subscribe(sources, {
          after: afterSequence,
          selection: { operations: [name] },
          matches: ofOperation(name),
          index: { by: "operation", values: [name] },
          filterKey: `operation ${name}`,
          signal,
          bookmarkIntervalMs: 0,
          isLast: endsOperation,
          direct: directDelivery(context, WatchOperationResponseSchema.field.event.number, guard),
        });
        for await (const item of cutOffWhenStalled(items, guard)) {
          if (item.kind !== "event") continue;
          const { stored } = item;
          yield binary ? withEncodedEvent(WatchOperationResponseSchema, WatchOperationResponseSchema.field.event.number, stored) : { event: stored.event };
        }
      });
    },

    async *watchEvents({ filter, afterSequence }, context: HandlerContext) {
      const principal = principalOf(context);
      if (filter?.profile) requireProfile(principal, filter.profile);
      const binary = answersInBinary(context);
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal) {
        const guard = new StallGuard(context, deps.slowSubscriberTimeoutMs, deps.metrics);
        const items = subscribe(sources, {
          after: afterSequence,
          // A watcher sees only the profiles its delegation covers.
          selection: eventSelection(filter, visibleProfiles(principal)),
          matches: visibleMatches(principal, filter),
          index: eventFilterIndex(filter, visibleProfiles(principal)),
          filterKey: eventFilterKey(filter, visibleProfiles(principal)),
          signal,
          bookmarkIntervalMs: deps.bookmarkIntervalMs,
          direct: directDelivery(context, WatchEventsResponseSchema.field.event.number, guard, bookmarkResponse),
        });
        for await (const item of cutOffWhenStalled(items, guard)) {
          if (item.kind === "bookmark") {
            yield bookmarkResponse(item.sequence).message;
            continue;
          }
          const { stored } = item;
          yield binary
            ? withEncodedEvent(WatchEventsResponseSchema, WatchEventsResponseSchema.field.event.number, stored)
            : { kind: { case: "event" as const, value: stored.event } };
        }
      });
    },
  };
}
