// Authentication of every call: the bearer credential names a delegation, verified by the
// Authority; the Principal is handed to the services through the call's context values.
// Health checking and reflection are the only exempt services, by this explicit list.
import { createContextKey, type ContextValues, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import type { Authority, Principal } from "../governance/authority.js";
import { AUTHORIZATION_HEADER, bearerToken } from "../governance/bearer.js";
import { unauthenticated } from "../governance/errors.js";

export const exemptServices: ReadonlySet<string> = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

const principalKey = createContextKey<Principal | undefined>(undefined, { description: "principal" });

/** The caller, if the call was authenticated (so far): the audit interceptor asks after a failed call. */
export function authenticatedPrincipal(values: ContextValues): Principal | undefined {
  return values.get(principalKey);
}

/** The caller of a non-exempt RPC. Throws if the interceptor did not run (a wiring mistake). */
export function principalOf(context: HandlerContext): Principal {
  const principal = authenticatedPrincipal(context.values);
  if (principal === undefined) throw new Error("no principal: the authentication interceptor did not run for this call");
  return principal;
}

export function authInterceptor(authority: Authority): Interceptor {
  return (next) => async (req) => {
    if (exemptServices.has(req.service.typeName)) return next(req);
    const header = req.header.get(AUTHORIZATION_HEADER);
    if (header === null) throw unauthenticated("no credential: send authorization: Bearer <token>");
    const token = bearerToken(header);
    if (token === undefined) throw unauthenticated("the authorization header is not a bearer credential");
    req.contextValues.set(principalKey, await authority.authenticate(token));
    return next(req);
  };
}
