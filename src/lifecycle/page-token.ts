// Page tokens: the position (the last item of the page), the RPC that issued the token and a
// digest of its filter, in a MACed token (mac-token.ts). An edited token, one reused with another
// filter, or one sent to another RPC is refused. The RPC matters beyond the filter: RPCs' empty
// filters digest alike, and the position of one (an operation name) means nothing to another (an
// audit sequence).
import { invalidPageToken } from "./errors.js";
import { MacTokens } from "./mac-token.js";

/** The paginated RPCs: a token of one is never accepted by another. */
export type PagedRpc =
  | "ListOperations"
  | "ListAuditRecords"
  | "ListCheckpoints"
  | "ListWorkspaceFiles"
  | "ListDelegations"
  | "ListPolicyBundles"
  | "ListMcpUpstreams";

export class PageTokens {
  private readonly tokens: MacTokens;

  constructor(key: string) {
    this.tokens = new MacTokens(key);
  }

  /** `filterDigest` is "" for an RPC without a filter. */
  issue(rpc: PagedRpc, lastPosition: string, filterDigest: string): string {
    return this.tokens.issue({ rpc, after: lastPosition, filter: filterDigest });
  }

  /** The position encoded in `token`, or undefined if it is not a token we issued for this RPC and filter. */
  read(rpc: PagedRpc, token: string, filterDigest: string): string | undefined {
    const decoded = this.tokens.read(token);
    return decoded?.rpc === rpc && decoded.filter === filterDigest && typeof decoded.after === "string" ? decoded.after : undefined;
  }

  /** The position of a request's `page_token`: undefined for "" (the first page); InvalidArgument naming the field for a token `read` refuses. */
  requestedPosition(rpc: PagedRpc, token: string, filterDigest: string): string | undefined {
    if (token === "") return undefined;
    const position = this.read(rpc, token, filterDigest);
    if (position === undefined) throw invalidPageToken();
    return position;
  }

  /**
   * A page of at most `limit` items from `rows`, which a store read with limit + 1 (one extra row
   * tells whether another page exists), and the token of the next page ("" on the last).
   */
  page<T>(rpc: PagedRpc, rows: readonly T[], limit: number, positionOf: (last: T) => string, filterDigest: string): { items: T[]; nextPageToken: string } {
    const items = rows.slice(0, limit);
    return { items, nextPageToken: rows.length > limit ? this.issue(rpc, positionOf(items[items.length - 1]!), filterDigest) : "" };
  }
}
