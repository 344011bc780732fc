// Delegated authority: turns a bearer credential into the Principal it names, or refuses it.
// A credential is valid only if its signature verifies with a trusted key (an operator trust
// anchor for a root, the server's key for a child), its delegation is on record (a root is
// recorded on first use), and neither it nor any ancestor is revoked, expired or not yet valid.
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DelegationSchema, type Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import type { StoreDelegations } from "../store/store.js";
import { CredentialError, UnknownKeyError, verifyCredential, type PublicKeyEntry } from "./credentials.js";
import { unauthenticated, unknownSigningKey } from "./errors.js";

export interface Principal {
  delegation: Delegation;
  /** Ancestors, parent first, root last. */
  chain: Delegation[];
}

const MAX_CACHED_CREDENTIALS = 10_000;

export const delegationName = (id: string): string => `delegations/${id}`;

/** Why a delegation cannot be used now, or undefined if it can. */
export function inactiveReason(delegation: Delegation, now: Date): string | undefined {
  if (delegation.revokeTime !== undefined) return `${delegation.name} is revoked`;
  if (delegation.expireTime !== undefined && timestampDate(delegation.expireTime) <= now) return `${delegation.name} has expired`;
  if (delegation.notBefore !== undefined && timestampDate(delegation.notBefore) > now) return `${delegation.name} is not valid yet`;
  return undefined;
}

/** The keys credentials may be signed with, which may change while the server runs (src/governance/trust-anchors.ts). */
export interface TrustedKeys {
  /** The keys now: a new array whenever they change. */
  current(): readonly PublicKeyEntry[];
  /** Called when a credential names a key id not among them: reads the keys again if it has not just done so. */
  unknownKeyId(): Promise<void>;
}

export interface AuthorityOptions {
  store: StoreDelegations;
  keys: TrustedKeys;
  /**
   * How long a verified credential is trusted without looking at the store again. Revocations
   * made through this server take effect at once; this bounds how late a revocation made
   * through another replica (same store) is seen.
   */
  cacheMs: number;
}

/**
 * An open stream's watch for the revocation of its principal's delegation or an ancestor. A class,
 * not closures: a watch stream holds it for hours (see src/lifecycle/subscription.ts's Subscriber).
 */
class RevocationWatch {
  private readonly controller = new AbortController();
  /** The delegations (its own and its ancestors) whose revocation ends the stream. */
  readonly names: readonly string[];
  /** Leaves the authority's watches; a function of its own, as callers pass it as a listener. */
  readonly dispose: () => void;

  constructor(
    private readonly principal: Principal,
    watches: Set<RevocationWatch>,
  ) {
    this.names = [principal.delegation.name, ...principal.chain.map((d) => d.name)];
    this.dispose = watches.delete.bind(watches, this);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  revoked(names: ReadonlySet<string>): void {
    if (Authority.affected(this.principal, names)) this.controller.abort(unauthenticated(`${this.principal.delegation.name} was revoked`));
  }
}

export class Authority {
  /** Verified credentials, with the keys they were verified against: a change of keys makes them be verified again. */
  private readonly cache = new Map<string, { principal: Principal; until: number; keys: readonly PublicKeyEntry[] }>();
  /** Each open stream's watch for revocations. */
  private readonly watches = new Set<RevocationWatch>();

  constructor(private readonly options: AuthorityOptions) {}

  async authenticate(token: string, now = new Date()): Promise<Principal> {
    const key = createHash("sha256").update(token).digest("base64url");
    const cached = this.cache.get(key);
    const keys = this.options.keys.current();
    if (cached !== undefined && cached.until > now.getTime() && cached.keys === keys && inactiveReason(cached.principal.delegation, now) === undefined) {
      return cached.principal;
    }
    this.cache.delete(key);
    const principal = await this.resolve(token, now);
    if (this.cache.size >= MAX_CACHED_CREDENTIALS) this.evictExpired(now.getTime());
    this.cache.set(key, { principal, until: now.getTime() + this.options.cacheMs, keys });
    return principal;
  }

  /** Bounds the cache: expired entries go; if that is not enough, all of them. */
  private evictExpired(nowMs: number): void {
    for (const [key, entry] of this.cache) if (entry.until <= nowMs) this.cache.delete(key);
    if (this.cache.size >= MAX_CACHED_CREDENTIALS) this.cache.clear();
  }

  private async resolve(token: string, now: Date): Promise<Principal> {
    let claims: Awaited<ReturnType<typeof this.verify>>;
    try {
      claims = await this.verify(token, now);
    } catch (error) {
      if (error instanceof UnknownKeyError) throw unknownSigningKey();
      if (error instanceof CredentialError) throw unauthenticated(error.message);
      throw error;
    }
    const name = delegationName(claims.id);
    // A root is recorded the first time it is seen (a write); after that it is only read.
    const recorded = await this.options.store.getDelegation(name);
    const delegation =
      recorded === undefined && claims.signer === "operator"
        ? await this.options.store.putDelegation(
            create(DelegationSchema, {
              name,
              subject: claims.subject,
              scope: claims.scope,
              notBefore: timestampFromDate(claims.notBefore),
              expireTime: timestampFromDate(claims.expires),
              keyId: claims.keyId,
              createTime: timestampFromDate(now),
            }),
          )
        : recorded;
    if (delegation === undefined) throw unauthenticated(`${name} is not on record`);
    if (delegation.parent !== (claims.parent ? delegationName(claims.parent) : "")) throw unauthenticated(`${name} does not match its record`);
    const chain: Delegation[] = [];
    for (let parent = delegation.parent; parent !== ""; ) {
      const ancestor = await this.options.store.getDelegation(parent);
      if (ancestor === undefined) throw unauthenticated(`${parent} is not on record`);
      chain.push(ancestor);
      parent = ancestor.parent;
    }
    for (const link of [delegation, ...chain]) {
      const reason = inactiveReason(link, now);
      if (reason !== undefined) throw unauthenticated(reason);
    }
    return { delegation, chain };
  }

  /**
   * Verifies against the keys now; a key id none of them has may be a key that has just been put
   * in place (`amctl init` after the server started), so the keys are read again (as often as
   * TrustedKeys allows) and the credential tried once more.
   */
  private async verify(token: string, now: Date) {
    try {
      return await verifyCredential(token, this.options.keys.current(), now);
    } catch (error) {
      if (!(error instanceof UnknownKeyError)) throw error;
      await this.options.keys.unknownKeyId();
      return verifyCredential(token, this.options.keys.current(), now);
    }
  }

  /** Whether `principal`'s delegation or an ancestor is among `names`. */
  static affected(principal: Principal, names: ReadonlySet<string>): boolean {
    return [principal.delegation, ...principal.chain].some((d) => names.has(d.name));
  }

  /** Forgets cached credentials and tells open streams, after revocations through this server. */
  revoked(names: ReadonlySet<string>): void {
    this.cache.clear();
    for (const watch of this.watches) watch.revoked(names);
  }

  /** An AbortSignal that fires when `principal`'s delegation or an ancestor is revoked here. */
  revocationSignal(principal: Principal): { signal: AbortSignal; dispose: () => void } {
    const watch = new RevocationWatch(principal, this.watches);
    this.watches.add(watch);
    return watch;
  }

  /**
   * Looks in the store for revocations of the delegations open streams depend on, made through
   * other servers on a shared store (this server's own reach the streams at once). Run every
   * `cacheMs`, so a stream ends within the same bound as a call would be refused.
   */
  async checkRevocations(): Promise<void> {
    const names = new Set([...this.watches].flatMap((watch) => watch.names));
    const revoked = new Set<string>();
    for (const name of names) {
      const delegation = await this.options.store.getDelegation(name);
      if (delegation?.revokeTime !== undefined) revoked.add(name);
    }
    if (revoked.size > 0) this.revoked(revoked);
  }
}
