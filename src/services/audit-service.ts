// agentmachine.v1.AuditService: reads of the audit log, for callers whose delegation scope has
// `audit_read`. Serves what the store holds; verification is the client's (amctl audit verify).
// And its retention: a root delegation (an operator's) with `audit_read` may prune the records a
// signed checkpoint covers, once archived (`amctl audit prune`, docs/audit.md).
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AuditDecisionFilter, AuditFilterSchema, type AuditService, type AuditFilter } from "../gen/agentmachine/v1/audit_service_pb.js";
import type { ReplayScheduler } from "../model/replay-scheduler.js";
import { tailAuditRecords, type AuditAppends } from "../audit/audit-tail.js";
import { allowedDecision } from "../audit/decisions.js";
import { pruneRefused } from "../audit/errors.js";
import type { Authority, Principal } from "../governance/authority.js";
import { outOfScope } from "../governance/errors.js";
import { messageDigest } from "../lifecycle/message-digest.js";
import type { PagedRpc, PageTokens } from "../lifecycle/page-token.js";
import { auditDraft } from "../call/audit-scope.js";
import { principalOf } from "../call/principal.js";
import { cutOffWhenStalled, StallGuard } from "../call/raw-request.js";
import type { PlaneMetrics } from "../metrics/plane-metrics.js";
import type { AuditQuery, StoreAudit } from "../store/store.js";
import { whileAuthorized } from "./while-authorized.js";

export interface AuditServiceDeps {
  store: StoreAudit;
  appends: AuditAppends;
  /** The server's turns for history pages, shared by every replay. */
  replays: ReplayScheduler;
  pageTokens: PageTokens;
  /** The audit key's verifier key (`<name>+<key id>+<base64 key>`). */
  verifierKey: string;
  authority: Authority;
  /** The period of the slow-subscriber check (src/call/raw-request.ts). */
  slowSubscriberTimeoutMs: number;
  /** Set when the server keeps metrics: watch streams are counted. */
  metrics?: PlaneMetrics;
}

const DEFAULT_PAGE_SIZE = 100;

/** The caller, if its delegation may read the audit log. */
function auditReader(context: HandlerContext): Principal {
  const principal = principalOf(context);
  if (!principal.delegation.scope?.auditRead) throw outOfScope("audit_read", "it may not read the audit log", principal.delegation.name);
  return principal;
}

/**
 * The caller, if it may prune the audit log: an operator's own act, so only a root delegation
 * (no child, however wide its scope, was signed by an operator) that may read the log.
 */
function auditPruner(context: HandlerContext): Principal {
  const principal = auditReader(context);
  if (principal.chain.length > 0) {
    throw outOfScope("audit_prune", "only a root delegation (one an operator signed) may prune the audit log", principal.delegation.name);
  }
  return principal;
}

/** The store query of a filter, without position and limit. */
function queryOf(filter: AuditFilter | undefined): Omit<AuditQuery, "afterSequence" | "limit"> {
  if (filter === undefined) return {};
  return {
    ...(filter.principal ? { principal: filter.principal } : {}),
    ...(filter.delegation ? { delegation: filter.delegation } : {}),
    operationTypes: filter.operationTypes,
    ...(filter.decision !== AuditDecisionFilter.UNSPECIFIED ? { allowed: filter.decision === AuditDecisionFilter.ALLOWED } : {}),
    ...(filter.startTime ? { startTime: timestampDate(filter.startTime) } : {}),
    ...(filter.endTime ? { endTime: timestampDate(filter.endTime) } : {}),
  };
}

export function auditService(deps: AuditServiceDeps): ServiceImpl<typeof AuditService> {
  const { store, pageTokens } = deps;

  /** The position a page token of `rpc` holds (a sequence or a size; 0 without a token). */
  function positionOf(rpc: PagedRpc, pageToken: string, filterDigest: string): bigint {
    return BigInt(pageTokens.requestedPosition(rpc, pageToken, filterDigest) ?? 0);
  }

  return {
    async listAuditRecords({ pageSize, pageToken, filter }, context) {
      auditReader(context);
      const digest = messageDigest(AuditFilterSchema, filter ?? create(AuditFilterSchema));
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      // One extra row tells whether another page exists.
      const rows = await store.listAuditRecords({ ...queryOf(filter), afterSequence: positionOf("ListAuditRecords", pageToken, digest), limit: limit + 1 });
      const records = rows.slice(0, limit);
      return { records, nextPageToken: rows.length > limit ? pageTokens.issue("ListAuditRecords", String(records[records.length - 1]!.sequence), digest) : "" };
    },

    async *watchAuditRecords({ afterSequence, filter }, context) {
      const principal = auditReader(context);
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal) {
        const records = tailAuditRecords(store, deps.appends, deps.replays, queryOf(filter), afterSequence, signal);
        for await (const record of cutOffWhenStalled(records, new StallGuard(context, deps.slowSubscriberTimeoutMs, deps.metrics))) yield { record };
      });
    },

    async getCheckpoint(_request, context) {
      auditReader(context);
      return { checkpoint: await store.latestAuditCheckpoint(), verifierKey: deps.verifierKey };
    },

    async pruneAuditLog({ checkpointSize, headHash }, context) {
      auditPruner(context);
      const result = await store.pruneAuditLog(checkpointSize, headHash, auditDraft(context, { decision: allowedDecision() }));
      if (result.kind !== "pruned") throw pruneRefused(checkpointSize, headHash, result);
      return { prunedRecords: result.records, checkpoint: result.checkpoint };
    },

    async listCheckpoints({ pageSize, pageToken }, context) {
      auditReader(context);
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      const rows = await store.listAuditCheckpoints(positionOf("ListCheckpoints", pageToken, ""), limit + 1);
      const checkpoints = rows.slice(0, limit);
      return {
        checkpoints,
        nextPageToken: rows.length > limit ? pageTokens.issue("ListCheckpoints", String(checkpoints[checkpoints.length - 1]!.size), "") : "",
      };
    },
  };
}
