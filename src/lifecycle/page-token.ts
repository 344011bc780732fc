// Page tokens: the position (the last name of the page) and a digest of the filter, in a MACed
// token (mac-token.ts). An edited token, or one reused with another filter, is refused.
import { MacTokens } from "./mac-token.js";

export class PageTokens {
  private readonly tokens: MacTokens;

  constructor(key: string) {
    this.tokens = new MacTokens(key);
  }

  issue(lastName: string, filterDigest: string): string {
    return this.tokens.issue({ after: lastName, filter: filterDigest });
  }

  /** The position encoded in `token`, or undefined if it is not a token we issued for this filter. */
  read(token: string, filterDigest: string): string | undefined {
    const decoded = this.tokens.read(token);
    return typeof decoded?.after === "string" && decoded.filter === filterDigest ? decoded.after : undefined;
  }
}
