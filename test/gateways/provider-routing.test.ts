// The model gateway's routing rule, as a table: a `provider/` prefix, a binding's models, the
// only provider there is, and clear refusals for what the rule cannot place.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ModelProviderApi, ModelProviderBindSpecSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { routeModel } from "../../src/gateways/provider-routing.js";

const binding = (provider: string, api: ModelProviderApi, models: string[] = [], endpoint = "http://127.0.0.1:1") =>
  create(ModelProviderBindSpecSchema, { provider, api, models, endpoint });

const openaiA = binding("alpha", ModelProviderApi.OPENAI, ["gpt-a"]);
const openaiB = binding("beta", ModelProviderApi.UNSPECIFIED);
const claude = binding("anthropic", ModelProviderApi.UNSPECIFIED);
const noEndpoint = binding("gamma", ModelProviderApi.OPENAI, [], "");

describe("routeModel", () => {
  const cases: [string, Parameters<typeof routeModel>, string | { kind: string; includes: string }][] = [
    ["a provider/ prefix picks the provider and is taken off the model", ["openai", "beta/gpt-x", [openaiA, openaiB], ["*"]], "beta:gpt-x"],
    ["a binding listing the model picks it among several", ["openai", "gpt-a", [openaiA, openaiB], ["*"]], "alpha:gpt-a"],
    ["the only provider speaking the API takes any model", ["anthropic", "claude-x", [openaiA, claude], ["*"]], "anthropic:claude-x"],
    ["a provider out of the caller's scope does not count", ["openai", "gpt-x", [openaiA, openaiB], ["beta"]], "beta:gpt-x"],
    ["a prefix naming no bound provider is part of the model", ["anthropic", "nobody/claude", [claude], ["*"]], "anthropic:nobody/claude"],
    [
      "several providers and nothing to tell them apart: refused, naming them",
      ["openai", "gpt-x", [openaiA, openaiB], ["*"]],
      { kind: "invalid", includes: "alpha, beta" },
    ],
    ["no provider speaking the API: refused", ["ollama", "llama3", [openaiA, claude], ["*"]], { kind: "not_found", includes: "ollama" }],
    ["a binding without an endpoint is not reachable", ["openai", "gpt-x", [noEndpoint], ["*"]], { kind: "not_found", includes: "openai" }],
  ];
  it.each(cases)("%s", (_name, args, expected) => {
    const routing = routeModel(...args);
    if (typeof expected === "string") {
      expect("route" in routing && `${routing.route.binding.provider}:${routing.route.model}`).toBe(expected);
    } else {
      expect("refusal" in routing && routing.refusal.kind).toBe(expected.kind);
      expect("refusal" in routing && routing.refusal.message).toContain(expected.includes);
    }
  });
});
