// Operation names and ids convert both ways, and only a leading `operations/` is an operation's
// collection (a bundle file or a workspace is never named after the rest of some other string).
import { describe, expect, it } from "vitest";
import { operationIdOf, operationName } from "../../src/model/resource-names.js";

describe("resource names", () => {
  it("names an operation operations/{id}, and takes the id back out", () => {
    expect(operationName("01ABC")).toBe("operations/01ABC");
    expect(operationIdOf(operationName("01ABC"))).toBe("01ABC");
  });

  it.each([
    ["01ABC", "01ABC"],
    ["x/operations/01ABC", "x/operations/01ABC"],
    ["abcoperations/01ABC", "abcoperations/01ABC"],
    ["operations/operations/01ABC", "operations/01ABC"],
  ])("leaves anything but a leading operations/ as it is: %s", (name, id) => {
    expect(operationIdOf(name)).toBe(id);
  });
});
