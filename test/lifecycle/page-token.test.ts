import { describe, expect, it } from "vitest";
import { PageTokens } from "../../src/lifecycle/page-token.js";

describe("page tokens", () => {
  const tokens = new PageTokens("key-1");
  const token = tokens.issue("ListOperations", "operations/01ABC", "filter-a");

  it("round-trip for the same RPC and filter", () => {
    expect(tokens.read("ListOperations", token, "filter-a")).toBe("operations/01ABC");
  });

  it("are refused by another RPC, with another filter, another key, or any edited character", () => {
    expect(tokens.read("ListAuditRecords", token, "filter-a")).toBeUndefined();
    expect(tokens.read("ListOperations", token, "filter-b")).toBeUndefined();
    expect(new PageTokens("key-2").read("ListOperations", token, "filter-a")).toBeUndefined();
    for (let i = 0; i < token.length; i += 1) {
      const edited = token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
      if (edited !== token) expect(tokens.read("ListOperations", edited, "filter-a")).toBeUndefined();
    }
    expect(tokens.read("ListOperations", "", "filter-a")).toBeUndefined();
    expect(tokens.read("ListOperations", "a.b.c", "filter-a")).toBeUndefined();
  });
});
