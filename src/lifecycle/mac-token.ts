// Opaque, tamper-evident tokens: a JSON payload and its HMAC, under a key kept in the store (so
// tokens survive restarts and work on every replica). An edited token is refused.
import { createHmac, timingSafeEqual } from "node:crypto";

export class MacTokens {
  constructor(private readonly key: string) {}

  private mac(payload: string): string {
    return createHmac("sha256", this.key).update(payload).digest("base64url");
  }

  issue(value: Record<string, string>): string {
    const payload = Buffer.from(JSON.stringify(value)).toString("base64url");
    return `${payload}.${this.mac(payload)}`;
  }

  /** The payload of `token`, or undefined if it is not a token issued with this key. */
  read(token: string): Record<string, unknown> | undefined {
    const [payload, mac, extra] = token.split(".");
    if (payload === undefined || mac === undefined || extra !== undefined) return undefined;
    // Compare the text, not decoded bytes: base64 has several spellings of the same bytes, and
    // only the one we issued is accepted.
    const expected = Buffer.from(this.mac(payload));
    const given = Buffer.from(mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    try {
      const decoded: unknown = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
      return typeof decoded === "object" && decoded !== null ? (decoded as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }
}
