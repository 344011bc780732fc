// agentmachine.v1.OperationService: thin — decode, call the lifecycle domain, respond.
import { createHash } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { create, toBinary } from "@bufbuild/protobuf";
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
import { isTerminal } from "../lifecycle/transitions.js";
import { cutOffWhenStalled } from "../server/raw-response.js";
import type { OperationStore } from "../store/store.js";

export interface OperationServiceDeps {
  store: OperationStore;
  hub: EventHub;
  runner: OperationRunner;
  pageTokens: PageTokens;
  defaultBudget: Budget;
  /** How often an idle WatchEvents stream gets a bookmark. */
  bookmarkIntervalMs: number;
  /** How long a stream may wait for its client to read before it is cut off. */
  slowSubscriberTimeoutMs: number;
}

const DEFAULT_PAGE_SIZE = 50;

function filterDigest(filter: OperationFilter | undefined): string {
  return createHash("sha256").update(filter ? toBinary(OperationFilterSchema, filter, { writeUnknownFields: false }) : new Uint8Array()).digest("base64url");
}

export function operationService(deps: OperationServiceDeps): ServiceImpl<typeof OperationService> {
  const { store, hub, runner } = deps;

  async function submit(request: SubmitOperationRequest) {
    // A retried submit is answered from the store before admission, which could now refuse it
    // (its cancel target may have finished, say).
    const previous = await store.findByRequestId(request.requestId);
    if (previous !== undefined) {
      if (previous.requestDigest !== requestDigest(request)) throw requestIdConflict(request.requestId, previous.operation.name);
      return { operation: previous.operation, created: false };
    }
    const result = await store.createOperation(await admit(request, { store, defaultBudget: deps.defaultBudget }));
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

  return {
    submitOperation: submit,

    async getOperation({ name }) {
      const operation = await store.getOperation(name);
      if (operation === undefined) throw operationNotFound(name);
      return { operation };
    },

    async listOperations({ pageSize, pageToken, filter }) {
      const digest = filterDigest(filter);
      const beforeName = pageToken === "" ? undefined : deps.pageTokens.read(pageToken, digest);
      if (pageToken !== "" && beforeName === undefined) throw invalidPageToken();
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      // One extra row tells whether another page exists.
      const rows = await store.listOperations({
        types: filter?.types,
        states: filter?.states,
        profile: filter?.profile || undefined,
        labels: filter?.labels,
        beforeName,
        limit: limit + 1,
      });
      const operations = rows.slice(0, limit);
      const more = rows.length > limit;
      return { operations, nextPageToken: more ? deps.pageTokens.issue(operations[operations.length - 1]!.name, digest) : "" };
    },

    async cancelOperation({ name, reason }) {
      const target = await store.getOperation(name);
      if (target === undefined) throw operationNotFound(name);
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
        ));
      return { cancelOperation: operation, operation: (await store.getOperation(name)) ?? target };
    },

    async *watchOperation({ name, afterSequence }, context: HandlerContext) {
      const operation = await store.getOperation(name);
      if (operation === undefined) throw operationNotFound(name);
      if (isTerminal(operation.state)) {
        if (afterSequence >= operation.lastSequence) return;
        // Its remaining events were compacted: nothing would ever end the stream.
        const { oldest } = await store.eventBounds();
        if (operation.lastSequence < oldest) throw eventsCompacted(afterSequence, oldest);
      }
      const items = subscribe(hub, store, {
        after: afterSequence,
        matches: (stored) => stored.event.operation === name,
        signal: context.signal,
        bookmarkIntervalMs: 0,
        isLast: (stored) => isTerminal(stored.event.state),
      });
      for await (const item of cutOffWhenStalled(items, deps.slowSubscriberTimeoutMs)) {
        if (item.kind === "event") yield { event: item.stored.event };
      }
    },

    async *watchEvents({ filter, afterSequence }, context: HandlerContext) {
      const items = subscribe(hub, store, {
        after: afterSequence,
        matches: (stored) => matchesEventFilter(filter, stored),
        signal: context.signal,
        bookmarkIntervalMs: deps.bookmarkIntervalMs,
      });
      for await (const item of cutOffWhenStalled(items, deps.slowSubscriberTimeoutMs)) {
        yield item.kind === "event"
          ? { kind: { case: "event" as const, value: item.stored.event } }
          : { kind: { case: "bookmark" as const, value: { sequence: item.sequence, time: timestampFromDate(new Date()) } } };
      }
    },
  };
}
