// Which bound provider a model request goes to (docs/model-gateway.md, "Which provider"):
//
//   1. a model named `provider/model`, where `provider` is bound and speaks the request's API,
//      goes to that provider, as `model`;
//   2. otherwise, among the bound providers that speak the request's API, have an endpoint and
//      are in the caller's scope: the one whose binding lists the model in `models`, if exactly
//      one does; else the only one there is;
//   3. anything else is refused, naming the choices: nothing bound (not_found), or several
//      providers and nothing to tell them apart (invalid).
//
// Routing only places the request: whether the provider may be used is decided afterwards by
// the one decision path (scope, profile rules, the modelProviderUse gate), which audits a denial.
import type { ModelProviderBindSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { allows } from "../governance/attenuation.js";
import { bindingApi, type ApiName, type ErrorKind } from "./model-apis.js";

export interface Route {
  binding: ModelProviderBindSpec;
  /** The model as the provider names it. */
  model: string;
}

export type Routing = { route: Route } | { refusal: { kind: ErrorKind; message: string } };

export function routeModel(api: ApiName, model: string, bindings: readonly ModelProviderBindSpec[], scopeProviders: readonly string[]): Routing {
  const speaking = bindings.filter((binding) => bindingApi(binding.api, binding.provider) === api && binding.endpoint !== "");
  const slash = model.indexOf("/");
  if (slash > 0) {
    const named = speaking.find((binding) => binding.provider === model.slice(0, slash));
    if (named !== undefined) return { route: { binding: named, model: model.slice(slash + 1) } };
  }
  const usable = speaking.filter((binding) => allows(scopeProviders, binding.provider));
  const listing = usable.filter((binding) => binding.models.includes(model));
  if (listing.length === 1) return { route: { binding: listing[0]!, model } };
  if (usable.length === 1) return { route: { binding: usable[0]!, model } };
  if (usable.length === 0) {
    return { refusal: { kind: "not_found", message: `amctl model gateway: no model provider speaking the ${api} API is bound for this execution` } };
  }
  const names = usable.map((binding) => binding.provider).join(", ");
  return {
    refusal: {
      kind: "invalid",
      message: `amctl model gateway: model ${JSON.stringify(model)} could go to several providers (${names}): name it as provider/model, or list it in one binding's models`,
    },
  };
}
