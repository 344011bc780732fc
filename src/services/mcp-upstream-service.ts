// agentmachine.v1.McpUpstreamService: the operator declares the upstream MCP servers the
// gateway forwards to. Every RPC is a root delegation's only (a stdio upstream is a program the
// server runs: operator authority, which no child holds however wide its scope; and a
// declaration's URL or command may hold what only the operator should see). A declaration is
// checked by the rules the --mcp-upstreams file's entries are (src/gateways/mcp-upstreams.ts),
// kept in the store, and taken up by this server's gateway before the call returns (others'
// at their next call, src/gateways/mcp-upstream-declarations.ts).
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { errorWithInfo, invalidField } from "../api/errors.js";
import { allowedDecision } from "../audit/decisions.js";
import { auditDraft } from "../call/audit-scope.js";
import { principalOf } from "../call/principal.js";
import { McpUpstreamSource, type McpUpstream, type McpUpstreamService } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import type { UpstreamDeclarations } from "../gateways/mcp-upstream-declarations.js";
import { messageOfUpstream, upstreamOfMessage } from "../gateways/mcp-upstream-messages.js";
import { UpstreamDeclarationInvalid } from "../gateways/mcp-upstreams.js";
import { outOfScope } from "../governance/errors.js";
import type { PageTokens } from "../lifecycle/page-token.js";
import type { StoreMcpUpstreams } from "../store/store.js";

export interface McpUpstreamServiceDeps {
  store: StoreMcpUpstreams;
  pageTokens: PageTokens;
  declarations: Pick<UpstreamDeclarations, "fileDeclaring" | "fileUpstreams">;
  /** Makes this server's gateway take up a change now (closing what was replaced or removed). */
  changed(): Promise<void>;
}

const DEFAULT_PAGE_SIZE = 50;

/** Refuses any caller but a root delegation (one an operator signed). */
function requireOperator(context: HandlerContext): void {
  const { delegation, chain } = principalOf(context);
  if (chain.length > 0) {
    throw outOfScope("mcp_upstreams", "only a root delegation (one an operator signed) may declare, remove or list upstream MCP servers", delegation.name);
  }
}

function declaredInFile(name: string, file: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "MCP_UPSTREAM_IN_FILE",
    `upstream MCP server ${name} is declared in ${file} (amctl serve --mcp-upstreams), which is fixed while the server runs: change the file and restart the server`,
    { upstream: name, file },
  );
}

function notDeclared(name: string) {
  return errorWithInfo(Code.NotFound, "MCP_UPSTREAM_NOT_FOUND", `no upstream MCP server ${name} is declared through the API`, { upstream: name });
}

export function mcpUpstreamService(deps: McpUpstreamServiceDeps): ServiceImpl<typeof McpUpstreamService> {
  const refuseFileName = (name: string): void => {
    const file = deps.declarations.fileDeclaring(name);
    if (file !== undefined) throw declaredInFile(name, file);
  };

  return {
    async putMcpUpstream({ upstream }, context) {
      requireOperator(context);
      let declared: ReturnType<typeof upstreamOfMessage>;
      try {
        declared = upstreamOfMessage(upstream!);
      } catch (error) {
        throw error instanceof UpstreamDeclarationInvalid ? invalidField(error.field, error.description) : error;
      }
      refuseFileName(declared.name);
      // Stored as the rules read it (a URL normalized, hosts lower-cased), so the list shows what is used.
      const stored = messageOfUpstream(declared, McpUpstreamSource.API);
      stored.updateTime = timestampNow();
      const { created } = await deps.store.putMcpUpstream(stored, auditDraft(context, { decision: allowedDecision() }));
      await deps.changed();
      return { upstream: stored, created };
    },

    async deleteMcpUpstream({ name }, context) {
      requireOperator(context);
      refuseFileName(name);
      const deleted = await deps.store.deleteMcpUpstream(name, auditDraft(context, { decision: allowedDecision() }));
      if (deleted === undefined) throw notDeclared(name);
      await deps.changed();
      return { upstream: deleted };
    },

    async listMcpUpstreams({ pageSize, pageToken }, context) {
      requireOperator(context);
      const after = deps.pageTokens.requestedPosition("ListMcpUpstreams", pageToken, "") ?? "";
      const limit = pageSize || DEFAULT_PAGE_SIZE;
      // The first limit + 1 names after `after` of both sources: the file's are few, the store's are paged.
      const byName = new Map<string, McpUpstream>();
      for (const stored of await deps.store.listMcpUpstreams({ after, limit: limit + 1 })) byName.set(stored.name, stored);
      // A stored name the file also declares (put before the file named it): the file's is the one in use.
      for (const upstream of deps.declarations.fileUpstreams()) {
        if (upstream.name > after) byName.set(upstream.name, messageOfUpstream(upstream, McpUpstreamSource.FILE));
      }
      const rows = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).slice(0, limit + 1);
      const { items, nextPageToken } = deps.pageTokens.page("ListMcpUpstreams", rows, limit, (last) => last.name, "");
      return { upstreams: items, nextPageToken };
    },
  };
}
