// What both stores keep of the idempotency keys of creates that are not operations
// (IssueDelegation, ApplyPolicyBundle): a row per key in `request_keys`, written in the commit of
// what the key created, naming it. The policy bundle names both stores give and read back.
import { profileTypeNames } from "../model/mapping.js";
import { toBinary } from "@bufbuild/protobuf";
import { PolicyBundleSchema, type PolicyBundle } from "../gen/agentmachine/v1/policy_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import type { KeyedCreate, RequestKey } from "./store.js";

/** The table, the same in both dialects: SQLite migration 8 and PostgreSQL migration 5, applied, so never edited. */
export const REQUEST_KEYS_TABLE = `
  -- Idempotency keys of the creates that are not operations (IssueDelegation,
  -- ApplyPolicyBundle; src/lifecycle/idempotency.ts), each naming what it created.
  CREATE TABLE request_keys (
    scope TEXT NOT NULL,
    rpc TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    resource TEXT NOT NULL,
    PRIMARY KEY (scope, rpc, request_id)
  );
`;

export interface RequestKeyRow {
  request_digest: string;
  resource: string;
}

/** The columns of a key's row, in the order of the stores' INSERT statements. */
export const REQUEST_KEY_COLUMNS = "scope, rpc, request_id, request_digest, resource";

export function requestKeyValues(key: RequestKey, resource: string): [string, string, string, string, string] {
  return [key.scope, key.rpc, key.requestId, key.requestDigest, resource];
}

/** The answer of a create whose key is recorded already (`row`). */
export function takenKey(key: RequestKey, row: RequestKeyRow): KeyedCreate<never> {
  return { kind: row.request_digest === key.requestDigest ? "existing" : "request-id-conflict", name: row.resource };
}

/** The values of a bundle's row (profile_type, version, data). */
export function bundleRowValues(bundle: PolicyBundle): [number, bigint, Uint8Array] {
  return [bundle.profileType, bundle.version, toBinary(PolicyBundleSchema, bundle)];
}

/** Numbers `bundle` as the version after `latest` (the newest stored of its profile type, null when none) and names it. */
export function numberBundle(bundle: PolicyBundle, latest: bigint | null | undefined): void {
  bundle.version = (latest ?? 0n) + 1n;
  bundle.name = bundleName(bundle.profileType, bundle.version);
}

export function bundleName(profileType: ProfileType, version: bigint): string {
  return `policyBundles/${profileTypeNames.get(profileType)}/versions/${version}`;
}

const profileTypeOfName = new Map([...profileTypeNames].map(([type, name]) => [name, type]));

/** The profile type and version a bundle name names; undefined for anything else. */
export function parseBundleName(name: string): { profileType: ProfileType; version: bigint } | undefined {
  const match = /^policyBundles\/([a-z_]+)\/versions\/([1-9][0-9]{0,18})$/.exec(name);
  const profileType = match && profileTypeOfName.get(match[1]!);
  return profileType === undefined || profileType === null ? undefined : { profileType, version: BigInt(match![2]!) };
}
