// Authentication of every call: the bearer credential names a delegation, verified by the
// Authority; the Principal is handed to the services through the call's context values
// (src/call/principal.ts).
// Health checking and reflection are the only exempt services, by this explicit list.
import type { Interceptor } from "@connectrpc/connect";
import type { Authority } from "../governance/authority.js";
import { AUTHORIZATION_HEADER, bearerToken } from "../governance/bearer.js";
import { unauthenticated } from "../governance/errors.js";
import { setPrincipal } from "../call/principal.js";

export const exemptServices: ReadonlySet<string> = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

export function authInterceptor(authority: Authority): Interceptor {
  return (next) => async (req) => {
    if (exemptServices.has(req.service.typeName)) return next(req);
    const header = req.header.get(AUTHORIZATION_HEADER);
    if (header === null) throw unauthenticated("no credential: send authorization: Bearer <token>");
    const token = bearerToken(header);
    if (token === undefined) throw unauthenticated("the authorization header is not a bearer credential");
    setPrincipal(req.contextValues, await authority.authenticate(token));
    return next(req);
  };
}
