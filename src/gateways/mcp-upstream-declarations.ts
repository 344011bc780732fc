// The upstreams the gateway forwards to, now: the file's (`--mcp-upstreams`, fixed for the
// server's life) and those put through McpUpstreamService (in the store, changeable while it
// runs). The store's are re-read exactly when its version moved (StoreMcpUpstreams), which a
// put or delete moves in its own commit: a reader that sees the new version and then lists
// sees that change or a later one, whichever replica made it. Reading the version is one small
// query per tools/list or tools/call, which is what makes a change on another replica take
// effect at the next call without a cache that could be stale across replicas.
import type { Logger } from "../api/logger.js";
import type { StoreMcpUpstreams } from "../store/store.js";
import { upstreamOfMessage } from "./mcp-upstream-messages.js";
import type { McpUpstream } from "./mcp-upstreams.js";

export class UpstreamDeclarations {
  /** The store's version `current` was read at; undefined before the first read. */
  private version: bigint | undefined;
  private current: ReadonlyMap<string, McpUpstream>;
  private reading: Promise<void> | undefined;
  private readonly fileNames: ReadonlySet<string>;

  constructor(
    private readonly file: { path: string | undefined; upstreams: readonly McpUpstream[] },
    private readonly store: Pick<StoreMcpUpstreams, "listMcpUpstreams" | "mcpUpstreamsVersion">,
    private readonly log: Logger,
  ) {
    this.current = new Map(file.upstreams.map((upstream) => [upstream.name, upstream]));
    this.fileNames = new Set(this.current.keys());
  }

  /** The file that declares `name`, if one does: such a name is not the API's to change. */
  fileDeclaring(name: string): string | undefined {
    return this.fileNames.has(name) ? this.file.path : undefined;
  }

  /** The file's upstreams, in its order. */
  fileUpstreams(): readonly McpUpstream[] {
    return this.file.upstreams;
  }

  /** Every declared upstream by name, as of now (the same map until something changed). */
  async now(): Promise<ReadonlyMap<string, McpUpstream>> {
    const version = await this.store.mcpUpstreamsVersion();
    while (this.version === undefined || this.version < version) {
      this.reading ??= this.read().finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    return this.current;
  }

  /** Reads the version, then the declarations: what is read is that version's or newer. */
  private async read(): Promise<void> {
    const version = await this.store.mcpUpstreamsVersion();
    const declared = new Map(this.file.upstreams.map((upstream) => [upstream.name, upstream]));
    for (const message of await this.store.listMcpUpstreams()) {
      // Put before this server's file named it: the file's stands here (the API refuses such puts now).
      if (declared.has(message.name)) {
        this.log.warn(
          { upstream: message.name, file: this.file.path },
          "an upstream MCP server put through the API has a name the --mcp-upstreams file declares; the file's is used",
        );
        continue;
      }
      try {
        declared.set(message.name, upstreamOfMessage(message));
      } catch (error) {
        this.log.warn({ err: error, upstream: message.name }, "a stored upstream MCP server declaration breaks a rule of this server; it is not used");
      }
    }
    this.current = declared;
    this.version = version;
  }
}
