// The credential each test server accepts, by base URL, so that test clients authenticate
// without every test passing tokens around (test/helpers/clients.ts and operations.ts use it).
import type { Interceptor } from "@connectrpc/connect";
import { bearer } from "./auth.js";

const tokens = new Map<string, string>();

export function registerToken(baseUrl: string, token: string): void {
  tokens.set(baseUrl, token);
}

export function tokenFor(baseUrl: string): string | undefined {
  return tokens.get(baseUrl);
}

/** A bearer interceptor for the server at `baseUrl`, if it has a registered token. */
export function authInterceptors(baseUrl: string): Interceptor[] {
  const token = tokens.get(baseUrl);
  return token === undefined ? [] : [bearer(token)];
}
