// A realistic audit log for the audit tests: varied records (principals, delegation chains, RPCs,
// operation types, allowed and denied decisions with gate, rule and bundle digest, request
// digests, non-ASCII text and characters JSON escapes), sealed into a chain, with a checkpoint
// signed every `every` records. Deterministic, so that a failure can be reproduced.
import { createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { AuditKey } from "../../src/audit/audit-key.js";
import { sealRecord, type AuditDraft } from "../../src/model/audit-chain.js";
import { signCheckpoint, verifierKeyString } from "../../src/audit/signed-note.js";
import { AuditCheckpointSchema, type AuditCheckpoint, type AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { commandRef, operationTypeNames } from "../../src/model/mapping.js";

export const ORIGIN = "agentmachine.local/audit/test-server";

export function newAuditKey(name = ORIGIN): AuditKey {
  const { privateKey } = generateKeyPairSync("ed25519");
  const publicKey = createPublicKey(privateKey);
  return { name, privateKey, publicKey, verifierKey: verifierKeyString(name, publicKey) };
}

/** mulberry32: a small seeded generator, so that the log is the same on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const ulid = (n: number) => `01J${n.toString(36).toUpperCase().padStart(23, "0")}`;

const principals = ["operator", "agent:planner", "agent:coder-7", "ci-bot@build.example", "zoë.müller@example.eu", "agent:検証"];
// Each operation type with its contract command ref, as the server records them.
const operations: [OperationType, string][] = [...operationTypeNames.keys()].map((type) => [type, commandRef(type)]);
const otherCommands = [
  { rpc: "/agentmachine.v1.DelegationService/IssueDelegation", ref: "IssueDelegation", resource: (n: number) => `delegations/${ulid(n * 7)}` },
  { rpc: "/agentmachine.v1.DelegationService/RevokeDelegation", ref: "RevokeDelegation", resource: (n: number) => `delegations/${ulid(n * 3)}` },
  { rpc: "/agentmachine.v1.PolicyService/ApplyPolicyBundle", ref: "ApplyPolicyBundle", resource: (n: number) => `policyBundles/tool_grant/v${n % 9}` },
];
const denials = [
  { code: "permission_denied", gate: "tool_grant", rule: "deny-network-tools", reason: 'tool "curl" is not in the delegation\'s tools' },
  { code: "permission_denied", gate: "container", rule: "no-privileged", reason: "privileged containers are refused (path C:\\agents\\run)" },
  { code: "resource_exhausted", gate: "budget", rule: "", reason: "budget tokens: asked 5000, 1200 left" },
  { code: "unauthenticated", gate: "", rule: "", reason: "no credential" },
];

function draft(n: number, next: () => number): AuditDraft {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const anonymous = next() < 0.05;
  const depth = 1 + Math.floor(next() * 3);
  const chain = Array.from({ length: depth }, (_, i) => `delegations/${ulid(n * 11 + i)}`);
  const isOperation = next() < 0.75;
  const [operationType, commandRef] = pick(operations);
  const other = pick(otherCommands);
  const denied = anonymous || next() < 0.2;
  const denial = anonymous ? (denials[3] as (typeof denials)[number]) : pick(denials);
  return {
    // Milliseconds apart, some with sub-millisecond nanos, so timestamps take every JSON form.
    time: { ...timestampFromMs(1_750_000_000_000 + n * 1_337), ...(n % 3 === 0 ? { nanos: (n * 7919) % 1_000_000_000 } : {}) },
    principal: anonymous ? "anonymous" : pick(principals),
    delegation: anonymous ? "" : (chain.at(-1) as string),
    delegationChain: anonymous ? [] : chain,
    rpc: isOperation ? "/agentmachine.v1.OperationService/SubmitOperation" : other.rpc,
    operationType: isOperation ? operationType : OperationType.UNSPECIFIED,
    commandRef: isOperation ? commandRef : other.ref,
    resource: isOperation ? `operations/${ulid(n)}` : other.resource(n),
    decision: denied
      ? {
          allowed: false,
          code: denial.code,
          gate: denial.gate,
          rule: denial.rule,
          bundleDigest: denial.gate ? sha256(`bundle-${denial.gate}`) : "",
          reason: denial.reason,
        }
      : { allowed: true, gate: "tool_grant", rule: "allow-listed", bundleDigest: sha256("bundle-tool_grant") },
    requestDigest: sha256(`request ${n}`),
  };
}

/** `count` sealed records, and a checkpoint of the log every `every` records. */
export function buildLog(count: number, every: number, key: AuditKey, seed = 1): { records: AuditRecord[]; checkpoints: AuditCheckpoint[] } {
  const next = random(seed);
  const records: AuditRecord[] = [];
  const checkpoints: AuditCheckpoint[] = [];
  for (let n = 1; n <= count; n++) {
    const record = sealRecord(draft(n, next), records.at(-1));
    records.push(record);
    if (n % every === 0) checkpoints.push(checkpointOf(key, record));
  }
  return { records, checkpoints };
}

/** A checkpoint of the log up to `head`, signed by `key`. */
export function checkpointOf(key: AuditKey, head: AuditRecord, origin = ORIGIN): AuditCheckpoint {
  const fields = { origin, size: head.sequence, headHash: head.hash };
  return create(AuditCheckpointSchema, { ...fields, signedNote: signCheckpoint(key, fields), time: head.time });
}
