// Who is calling: the Principal the authentication interceptor (src/server/auth-interceptor.ts)
// found for the call, read by the services from the call's context values.
import { createContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { Principal } from "../governance/authority.js";

const principalKey = createContextKey<Principal | undefined>(undefined, { description: "principal" });

/** For the authentication interceptor, once the credential is verified. */
export function setPrincipal(values: ContextValues, principal: Principal): void {
  values.set(principalKey, principal);
}

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
