// The wire form of a credential, `authorization: Bearer <token>`, in one place: what clients
// send and what the server accepts.
import type { Interceptor } from "@connectrpc/connect";

export const AUTHORIZATION_HEADER = "authorization";

const BEARER = /^Bearer ([A-Za-z0-9._~+/=-]+)$/;

/** A client interceptor that sends `token` with every call. */
export function bearerInterceptor(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set(AUTHORIZATION_HEADER, `Bearer ${token}`);
    return next(req);
  };
}

/** The token of an authorization header value, or undefined if it is not a bearer credential. */
export function bearerToken(header: string): string | undefined {
  return BEARER.exec(header)?.[1];
}
