// Where a call came from, read from its raw request (src/call/raw-request.ts) and the address the
// listener noted for its connection (src/server/one-port-listener.ts).
import type { ContextValues } from "@connectrpc/connect";
import { rawRequestOf } from "../call/raw-request.js";
import { addressKey } from "./address-key.js";
import { remoteAddressOf } from "./one-port-listener.js";

/** The address a call's connection came from (its span's `network.peer.address`), if known. */
export function peerAddressOf(values: ContextValues): string | undefined {
  const req = rawRequestOf(values);
  return req && remoteAddressOf(req);
}

/**
 * Where a call came from, as the connection limits count sources (src/server/address-key.ts): an
 * IPv4 address, or an IPv6 /64. Undefined if not known.
 */
export function sourceOf(values: ContextValues): string | undefined {
  const address = peerAddressOf(values);
  return address && addressKey(address);
}
