// Verification of the audit log in the browser, with WebCrypto: the rules of
// src/audit/verify.ts and src/audit/signed-note.ts (docs/audit.md), which use node:crypto and
// so cannot run here. Records: sequences without gaps, each `previous_hash` the hash of the
// record before, each `hash` the SHA-256 of the record's canonical JSON (RFC 8785) without
// `hash`. Checkpoint: a C2SP signed note whose Ed25519 signature verifies with the verifier
// key the operator gives, stating the log's size and the hash of the record at that size.
import { toJson } from "@bufbuild/protobuf";
import canonicalizeModule from "canonicalize";
import { AuditRecordSchema, type AuditCheckpoint, type AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";

// The module's default export is the function; its typings say otherwise under NodeNext, where
// tests import this file (as src/audit/chain.ts does).
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;
const GENESIS_HASH = "0".repeat(64);
const ED25519 = 0x01;
const utf8 = new TextEncoder();

export type Verdict = { ok: true; records: bigint; checkpointSize: bigint } | { ok: false; reason: string };

interface Verifier {
  name: string;
  keyId: Uint8Array;
  // Spelled out rather than CryptoKey: the tests typecheck this file without the DOM library.
  key: Awaited<ReturnType<typeof crypto.subtle.importKey>>;
}

const hex = (bytes: Uint8Array): string => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");

function base64(text: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    const bytes = Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
    // Only the one standard encoding of the bytes, as signed-note.ts accepts.
    return btoa(String.fromCharCode(...bytes)) === text ? bytes : undefined;
  } catch {
    return undefined;
  }
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** `<name>+<key id>+<base64(0x01 || key)>`; throws an Error saying what is wrong. */
export async function parseVerifierKey(text: string): Promise<Verifier> {
  const [name = "", id = "", ...rest] = text.trim().split("+");
  const raw = base64(rest.join("+"));
  if (name === "" || !/^[0-9a-fA-F]{8}$/.test(id) || raw === undefined) throw new Error("not a verifier key: expected <name>+<8 hex digits>+<base64 key>");
  if (raw[0] !== ED25519 || raw.length !== 33) throw new Error("not an Ed25519 verifier key");
  const keyId = (await sha256(new Uint8Array([...utf8.encode(name), 0x0a, ...raw]))).subarray(0, 4);
  if (hex(keyId) !== id.toLowerCase()) throw new Error(`the key id ${id} is not the id of the key`);
  const key = await crypto.subtle.importKey("raw", raw.subarray(1), { name: "Ed25519" }, false, ["verify"]);
  return { name, keyId, key };
}

/** Whether the note carries a valid signature by `verifier`, and states what `checkpoint` says. */
async function checkpointProblem(checkpoint: AuditCheckpoint, verifier: Verifier): Promise<string | undefined> {
  const note = checkpoint.signedNote;
  const split = note.lastIndexOf("\n\n");
  if (split < 0) return "malformed note";
  const body = note.slice(0, split + 1);
  const signature = note
    .slice(split + 2)
    .split("\n")
    .map((line) => /^\u2014 (\S+) (\S+)$/.exec(line))
    .map((match) => (match && match[1] === verifier.name ? base64(match[2] ?? "") : undefined))
    .find((bytes) => bytes !== undefined && hex(bytes.subarray(0, 4)) === hex(verifier.keyId));
  if (signature === undefined) return `no signature by key ${verifier.name}+${hex(verifier.keyId)}`;
  if (!(await crypto.subtle.verify("Ed25519", verifier.key, signature.subarray(4), utf8.encode(body)))) return "the signature does not verify";
  const [origin, size, hash] = body.slice(0, -1).split("\n");
  const head = base64(hash ?? "");
  if (origin !== checkpoint.origin || size !== String(checkpoint.size) || head === undefined || hex(head) !== checkpoint.headHash)
    return "its fields differ from its signed note";
  return undefined;
}

async function recordHash(record: AuditRecord): Promise<string> {
  const json = toJson(AuditRecordSchema, record) as Record<string, unknown>;
  delete json.hash;
  return hex(await sha256(utf8.encode(canonicalize(json) as string)));
}

/**
 * Verifies `records` (the whole log as kept, in sequence order) up to `checkpoint`, the last
 * signed one. A pruned log starts after the checkpoint `start` it was pruned to.
 */
export async function verifyAuditLog(
  records: readonly AuditRecord[],
  checkpoint: AuditCheckpoint,
  start: AuditCheckpoint | undefined,
  verifierKey: string,
): Promise<Verdict> {
  let verifier: Verifier;
  try {
    verifier = await parseVerifierKey(verifierKey);
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
  for (const signed of start === undefined ? [checkpoint] : [start, checkpoint]) {
    const problem = await checkpointProblem(signed, verifier);
    if (problem) return { ok: false, reason: `checkpoint of size ${signed.size}: ${problem}` };
  }
  let sequence = start?.size ?? 0n;
  let head = start?.headHash ?? GENESIS_HASH;
  for (const record of records) {
    if (record.sequence > checkpoint.size) break;
    if (record.sequence !== sequence + 1n) return { ok: false, reason: `record ${record.sequence}: out of sequence, expected record ${sequence + 1n}` };
    if (record.previousHash !== head) return { ok: false, reason: `record ${record.sequence}: previous_hash does not link to the record before` };
    if ((await recordHash(record)) !== record.hash) return { ok: false, reason: `record ${record.sequence}: hash does not match its contents` };
    sequence = record.sequence;
    head = record.hash;
  }
  if (sequence !== checkpoint.size)
    return { ok: false, reason: `the log ends at record ${sequence} but the checkpoint covers ${checkpoint.size} records (truncated)` };
  if (head !== checkpoint.headHash) return { ok: false, reason: `checkpoint of size ${checkpoint.size}: head hash does not match record ${sequence}` };
  return { ok: true, records: sequence, checkpointSize: checkpoint.size };
}
