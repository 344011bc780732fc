// An MCP upstream's egress credential: valid from issue to revocation (its sandbox's end), one
// per sandbox start, and it admits exactly the host:port pairs its declaration lists.
import { describe, expect, it } from "vitest";
import { egressListed, UpstreamEgress } from "../../src/gateways/mcp-upstream-egress.js";

describe("UpstreamEgress", () => {
  it("knows a credential from issue until revoked, and each issue is a new credential", () => {
    const credentials = new UpstreamEgress();
    const holder = { upstream: "search", egress: [{ host: "api.example.com", port: 443 }] };
    const first = credentials.issue(holder);
    const second = credentials.issue(holder);
    expect(first.credential).not.toBe(second.credential);
    expect(credentials.holderOf(first.credential)).toBe(holder);
    first.revoke();
    expect(credentials.holderOf(first.credential)).toBeUndefined();
    expect(credentials.holderOf(second.credential)).toBe(holder);
    expect(credentials.holderOf(`${second.credential}x`)).toBeUndefined();
  });

  it("admits exactly the listed host:port pairs", () => {
    const holder = { upstream: "search", egress: [{ host: "api.example.com", port: 443 }] };
    expect(egressListed(holder, { host: "api.example.com", port: 443 })).toBe(true);
    expect(egressListed(holder, { host: "api.example.com", port: 80 })).toBe(false);
    expect(egressListed(holder, { host: "evil.api.example.com", port: 443 })).toBe(false);
  });
});
