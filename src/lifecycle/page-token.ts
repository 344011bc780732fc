// Opaque, tamper-evident page tokens: the position (the last name of the page) and a digest
// of the filter, MACed with a key kept in the store (so tokens survive restarts and work on
// every replica). An edited token, or one reused with another filter, is refused.
import { createHmac, timingSafeEqual } from "node:crypto";

export class PageTokens {
  constructor(private readonly key: string) {}

  private mac(payload: string): Buffer {
    return createHmac("sha256", this.key).update(payload).digest();
  }

  issue(lastName: string, filterDigest: string): string {
    const payload = Buffer.from(JSON.stringify({ after: lastName, filter: filterDigest })).toString("base64url");
    return `${payload}.${this.mac(payload).toString("base64url")}`;
  }

  /** The position encoded in `token`, or undefined if it is not a token we issued for this filter. */
  read(token: string, filterDigest: string): string | undefined {
    const [payload, mac, extra] = token.split(".");
    if (payload === undefined || mac === undefined || extra !== undefined) return undefined;
    // Compare the text, not decoded bytes: base64 has several spellings of the same bytes, and
    // only the one we issued is accepted.
    const expected = Buffer.from(this.mac(payload).toString("base64url"));
    const given = Buffer.from(mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    try {
      const decoded = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { after?: unknown; filter?: unknown };
      return typeof decoded.after === "string" && decoded.filter === filterDigest ? decoded.after : undefined;
    } catch {
      return undefined;
    }
  }
}
