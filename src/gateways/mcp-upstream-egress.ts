// The credentials MCP stdio upstreams use the plane's egress proxy with. An upstream whose
// declaration lists egress destinations (mcp-upstreams.ts) gets, each time its sandbox starts,
// a fresh random credential, which the sandbox's egress socket (src/sandbox/plane-sockets.ts)
// puts in every CONNECT it forwards, as it does an attempt's: the program inside never holds
// it. The proxy (egress-proxy.ts) looks it up here and lets the upstream reach exactly the
// destinations its declaration lists. An upstream is no execution: there is no operation to
// charge or delegation to decide by, so the operator's list is the whole rule.
import { createHash, randomBytes } from "node:crypto";

/** A `host:port` an upstream may reach through the plane's egress proxy. */
export interface EgressDestination {
  host: string;
  port: number;
}

export interface UpstreamEgressHolder {
  upstream: string;
  egress: readonly EgressDestination[];
}

/** Marks the credential in logs and dumps as an upstream's, not an execution's. */
const CREDENTIAL_PREFIX = "amctl-upstream-";

/** Keyed by the credential's digest, so a lookup compares digests, never the secret itself. */
function digest(credential: string): string {
  return createHash("sha256").update(credential).digest("hex");
}

export class UpstreamEgress {
  private readonly holders = new Map<string, UpstreamEgressHolder>();

  /** A fresh credential for `holder`, valid until revoked (when its sandbox ends). */
  issue(holder: UpstreamEgressHolder): { credential: string; revoke: () => void } {
    const credential = `${CREDENTIAL_PREFIX}${randomBytes(32).toString("base64url")}`;
    const key = digest(credential);
    this.holders.set(key, holder);
    return { credential, revoke: () => this.holders.delete(key) };
  }

  /** The upstream `credential` was issued to, while it is valid. */
  holderOf(credential: string): UpstreamEgressHolder | undefined {
    return credential.startsWith(CREDENTIAL_PREFIX) ? this.holders.get(digest(credential)) : undefined;
  }
}

/** Whether `holder`'s declaration lists `destination`. */
export function egressListed(holder: UpstreamEgressHolder, destination: EgressDestination): boolean {
  return holder.egress.some((allowed) => allowed.host === destination.host && allowed.port === destination.port);
}
