// Delegation credentials: JWTs signed with Ed25519 (EdDSA), via jose. Roots are signed offline
// by an operator key (`amctl delegation root`); children by the server's key, on behalf of a
// caller whose own delegation covers them. Verification pins the algorithm, audience and
// issuer, and picks the key by `kid` from the keys it was given: nothing else is trusted.
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { SignJWT, calculateJwkThumbprint, exportJWK, importPKCS8, importSPKI, jwtVerify, decodeProtectedHeader, errors, type CryptoKey } from "jose";
import { DelegationScopeSchema, type DelegationScope } from "../gen/agentmachine/v1/delegation_pb.js";

export const AUDIENCE = "agentmachine";
export const ALGORITHM = "EdDSA";
const CLAIM = "amctl";

/** Who may sign: operators sign roots, the server signs children. */
export type Signer = "operator" | "server";
const issuerPrefix: Record<Signer, string> = { operator: "amctl-operator:", server: "amctl-server:" };

export interface CredentialClaims {
  /** The delegation id (`jti`). */
  id: string;
  subject: string;
  /** The parent delegation's id; absent for a root. */
  parent?: string;
  scope: DelegationScope;
  notBefore: Date;
  expires: Date;
  /** `iat`; now if absent. A delegation's credential takes its creation time, so signing it again gives the same credential. */
  issuedAt?: Date;
}

export interface VerifiedCredential extends CredentialClaims {
  keyId: string;
  signer: Signer;
}

export interface PublicKeyEntry {
  keyId: string;
  key: CryptoKey;
  signer: Signer;
}

export interface SigningKey {
  keyId: string;
  key: CryptoKey;
  signer: Signer;
}

export async function keyIdOf(publicKey: CryptoKey): Promise<string> {
  return calculateJwkThumbprint(await exportJWK(publicKey));
}

export async function importSigningKey(pkcs8Pem: string, publicPem: string, signer: Signer): Promise<SigningKey> {
  const key = await importPKCS8(pkcs8Pem, ALGORITHM);
  return { key, keyId: await keyIdOf(await importSPKI(publicPem, ALGORITHM, { extractable: true })), signer };
}

export async function importPublicKey(spkiPem: string, signer: Signer): Promise<PublicKeyEntry> {
  const key = await importSPKI(spkiPem, ALGORITHM, { extractable: true });
  return { key, keyId: await keyIdOf(key), signer };
}

export async function signCredential(signing: SigningKey, claims: CredentialClaims): Promise<string> {
  return new SignJWT({
    [CLAIM]: { ...(claims.parent ? { parent: claims.parent } : {}), scope: toJson(DelegationScopeSchema, claims.scope) },
  })
    .setProtectedHeader({ alg: ALGORITHM, kid: signing.keyId, typ: "JWT" })
    .setIssuer(`${issuerPrefix[signing.signer]}${signing.keyId}`)
    .setSubject(claims.subject)
    .setAudience(AUDIENCE)
    .setJti(claims.id)
    .setIssuedAt(claims.issuedAt === undefined ? undefined : Math.floor(claims.issuedAt.getTime() / 1000))
    .setNotBefore(Math.floor(claims.notBefore.getTime() / 1000))
    .setExpirationTime(Math.floor(claims.expires.getTime() / 1000))
    .sign(signing.key);
}

export class CredentialError extends Error {}

/** The credential names a key (`kid`) that is none of the keys it was checked against. */
export class UnknownKeyError extends CredentialError {
  constructor() {
    super("the credential is signed by an unknown key");
  }
}

/**
 * Verifies a credential against the given keys. Throws CredentialError (never anything else)
 * with a reason safe to show the caller: it names what failed, never the token.
 */
export async function verifyCredential(token: string, keys: readonly PublicKeyEntry[], now = new Date()): Promise<VerifiedCredential> {
  let keyId: string | undefined;
  try {
    keyId = decodeProtectedHeader(token).kid;
  } catch {
    throw new CredentialError("the credential is not a JWS");
  }
  const entry = keys.find((k) => k.keyId === keyId);
  if (entry === undefined) throw new UnknownKeyError();
  try {
    const { payload } = await jwtVerify(token, entry.key, {
      algorithms: [ALGORITHM],
      audience: AUDIENCE,
      issuer: `${issuerPrefix[entry.signer]}${entry.keyId}`,
      requiredClaims: ["jti", "sub", "exp", "nbf"],
      currentDate: now,
    });
    const claim = payload[CLAIM] as { parent?: unknown; scope?: unknown } | undefined;
    if (claim === undefined || typeof claim !== "object") throw new CredentialError("the credential carries no delegation");
    const parent = typeof claim.parent === "string" ? claim.parent : undefined;
    if ((entry.signer === "operator") !== (parent === undefined)) {
      throw new CredentialError("roots are signed by operators and children by the server");
    }
    return {
      id: payload.jti!,
      subject: payload.sub!,
      ...(parent !== undefined ? { parent } : {}),
      scope: fromJson(DelegationScopeSchema, claim.scope as JsonValue),
      notBefore: new Date(payload.nbf! * 1000),
      expires: new Date(payload.exp! * 1000),
      keyId: entry.keyId,
      signer: entry.signer,
    };
  } catch (error) {
    if (error instanceof CredentialError) throw error;
    if (error instanceof errors.JWTExpired) throw new CredentialError("the credential has expired");
    if (error instanceof errors.JWTClaimValidationFailed) throw new CredentialError(`the credential's ${error.claim} claim is not valid`);
    throw new CredentialError("the credential's signature or format is not valid");
  }
}
