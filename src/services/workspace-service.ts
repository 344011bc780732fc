// agentmachine.v1.WorkspaceService: what an execution left in its workspace. Authorized like a
// read of the operation (another profile's workspace is NotFound); a download is also decided
// by the artifactAccess gate and recorded in the audit log, allowed or denied (a denial by the
// audit interceptor, from the error); a delete needs the operation's type in the caller's scope.
import { existsSync } from "node:fs";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { WorkspaceService } from "../gen/agentmachine/v1/workspace_service_pb.js";
import { allowedDecision } from "../audit/decisions.js";
import { noWorkspace, workspaceNotTerminal, workspaceOnWorker, fileChanged } from "../executors/workspace-errors.js";
import { WorkspaceFiles, workspaceOf, workspacePathComponents } from "../executors/workspace-files.js";
import { policyDenied, profileNotFound } from "../governance/errors.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";
import { operationInput } from "../governance/policy/policy-input.js";
import { requireOperation } from "../governance/scope.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import { isTerminal } from "../model/transitions.js";
import { visibleOperation } from "../lifecycle/visible-operation.js";
import type { WorkspaceKeeper } from "../lifecycle/workspace-keeper.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import { invalidField } from "../api/errors.js";
import { isExecution } from "../model/execution-types.js";
import type { StoreAccounts, StoreAudit, StoreOperations } from "../store/store.js";
import { sha256OfFile, verifiedChunks } from "./chunked-download.js";

export interface WorkspaceServiceDeps {
  store: StoreOperations & StoreAccounts & StoreAudit;
  dataDir: string;
  policy: PolicyEngine;
  pageTokens: PageTokens;
  keeper: WorkspaceKeeper;
}

const DEFAULT_PAGE_SIZE = 100;

function pathComponents(path: string): string[] {
  const components = workspacePathComponents(path);
  if (components === undefined) throw invalidField("path", "must be relative and /-separated, without empty, `.` or `..` components");
  return components;
}

export function workspaceService(deps: WorkspaceServiceDeps): ServiceImpl<typeof WorkspaceService> {
  const { store, dataDir } = deps;

  /** The ended operation whose workspace this server ran, if the caller may see it (and, with `authorize`, act on it). */
  async function endedWithWorkspace(name: string, context: HandlerContext, authorize: (operation: Operation) => void = () => {}): Promise<Operation> {
    const operation = await visibleOperation(store, principalOf(context), name);
    authorize(operation);
    if (!isExecution(operation.type)) throw noWorkspace(name, "only executions and containers run in one");
    if (!isTerminal(operation.state)) throw workspaceNotTerminal(name, operation.state);
    if (operation.worker !== "") throw workspaceOnWorker(name, operation.worker);
    return operation;
  }

  async function readable(name: string, context: HandlerContext): Promise<{ operation: Operation; files: WorkspaceFiles }> {
    const operation = await endedWithWorkspace(name, context);
    const dir = workspaceOf(dataDir, name);
    if (!existsSync(dir))
      throw noWorkspace(
        name,
        "it was removed (deleted, at the end of its retention period, or for room under the disk limit), or another server ran the operation",
      );
    return { operation, files: new WorkspaceFiles(name, dir) };
  }

  /** The artifactAccess gate's decision on downloading `path`; PermissionDenied naming gate and rule when it denies. */
  async function decideDownload(operation: Operation, path: string, context: HandlerContext) {
    const profile = await store.getProfile(operation.profile);
    if (profile === undefined) throw profileNotFound(operation.profile);
    const input = operationInput({ principal: principalOf(context), profile: operation.profile, profileType: profile.profileType }, operation);
    input.workspacePath = path;
    const decisions = deps.policy.decide(profile.profileType, ["artifactAccess"], input);
    const denied = decisions.find((decision) => !decision.allowed);
    if (denied !== undefined) throw policyDenied(denied);
    return decisions;
  }

  return {
    async listWorkspaceFiles({ operation: name, path, pageSize, pageToken }, context) {
      const components = pathComponents(path);
      const filter = `${name}\0${components.join("/")}`;
      const after = deps.pageTokens.requestedPosition("ListWorkspaceFiles", pageToken, filter);
      const { files } = await readable(name, context);
      const all = await files.list(components);
      const rest = after === undefined ? all : all.filter((file) => Buffer.compare(Buffer.from(file.path, "utf8"), Buffer.from(after, "utf8")) > 0);
      const { items: page, nextPageToken } = deps.pageTokens.page("ListWorkspaceFiles", rest, pageSize || DEFAULT_PAGE_SIZE, (last) => last.path, filter);
      for (const file of page) {
        const handle = await files.openListed(file);
        if (handle === undefined) continue;
        try {
          file.sha256 = await sha256OfFile(handle);
        } finally {
          await handle.close();
        }
      }
      return { files: page, nextPageToken };
    },

    async *downloadWorkspaceFile({ operation: name, path }, context) {
      const components = pathComponents(path);
      const { operation, files } = await readable(name, context);
      const decisions = await decideDownload(operation, components.join("/"), context);
      const { handle, file } = await files.openForDownload(components);
      try {
        file.sha256 = await sha256OfFile(handle);
        const audit = auditDraft(context, { resource: name, decision: allowedDecision(decisions) });
        if (audit !== undefined) await store.appendAudit(audit);
        yield { part: { case: "file", value: file } };
        for await (const chunk of verifiedChunks(handle, file.sha256, () => fileChanged(name, file.path))) yield { part: { case: "chunk", value: chunk } };
      } finally {
        await handle.close();
      }
    },

    async deleteWorkspace({ operation: name }, context) {
      const operation = await endedWithWorkspace(name, context, (visible) =>
        requireOperation(principalOf(context), { type: visible.type, profile: visible.profile }),
      );
      const freed = await deps.keeper.delete(operation);
      const audit = auditDraft(context, { resource: name, decision: allowedDecision() });
      if (audit !== undefined) await store.appendAudit(audit);
      return { removed: freed !== undefined, freedBytes: BigInt(freed ?? 0) };
    },
  };
}
