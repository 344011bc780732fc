// biome-ignore-all lint/suspicious/noControlCharactersInRegex: the signed-note format forbids control characters, and these regexes find them
// Checkpoints of the audit log as C2SP signed notes (https://c2sp.org/signed-note) whose body is a
// tlog-checkpoint (https://c2sp.org/tlog-checkpoint), signed with Ed25519. A standard format so
// that the checkpoints can be read, and their signatures checked, by existing transparency-log
// tooling (Go's golang.org/x/mod/sumdb/note and its ports) as well as by `amctl`.
//
// One deviation in meaning, not in syntax: the checkpoint's "root hash" line holds the hash of
// the last record of the hash chain (src/model/audit-chain.ts), not the root of an RFC 6962 Merkle
// tree. Tools can check the signature, but not inclusion or consistency proofs.
import { createHash, createPublicKey, sign, verify, type KeyObject } from "node:crypto";

/** The signature type byte of Ed25519 in key ids and verifier keys. */
const ED25519 = 0x01;
const EM_DASH = "\u2014";
// The spec asks verifiers for a limit and at least 16; 100 is what Go's note package accepts.
const MAX_SIGNATURES = 100;

/** A public key that signs notes, as a verifier holds it. */
export interface VerifierKey {
  name: string;
  /** The first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key). */
  keyId: Buffer;
  publicKey: KeyObject;
  /** The key in its text form, `<name>+<8 hex digits key id>+<base64(0x01 || public key)>`, hex in lowercase. */
  text: string;
}

/** What a checkpoint states: the log `origin` had `size` records, the last of hash `headHash` (lowercase hex). */
export interface Checkpoint {
  origin: string;
  size: bigint;
  headHash: string;
}

/** A private key that signs notes, with its name and public half (an AuditKey, src/audit/audit-key.ts). */
export interface SigningKey {
  name: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** A failure, in words. */
export interface NoteError {
  error: string;
}

// ---- keys ------------------------------------------------------------------------------------

/** Key names: non-empty, no Unicode spaces (Go's unicode.IsSpace counts U+0085), no `+`, no control characters. */
function isKeyName(name: string): boolean {
  return name.length > 0 && !/[\s\u0000-\u001f\u0085+]/u.test(name);
}

function rawPublicKey(publicKey: KeyObject): Buffer {
  return Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
}

function keyIdOf(name: string, raw: Buffer): Buffer {
  return createHash("sha256")
    .update(Buffer.concat([Buffer.from(name, "utf8"), Buffer.from([0x0a, ED25519]), raw]))
    .digest()
    .subarray(0, 4);
}

/** Base64 (RFC 4648 §4, padded) decoded only if `text` is exactly the encoding of its bytes. */
function strictBase64(text: string): Buffer | undefined {
  // Node's decoder skips characters it does not know and accepts the URL alphabet and missing
  // padding; re-encoding tells whether the text was the one standard encoding.
  const bytes = Buffer.from(text, "base64");
  return bytes.toString("base64") === text ? bytes : undefined;
}

/** The verifier key of an Ed25519 public key under `name`. */
export function verifierKeyString(name: string, publicKey: KeyObject): string {
  if (!isKeyName(name)) throw new Error(`not a key name: ${JSON.stringify(name)} (it must be non-empty, without spaces or "+")`);
  const raw = rawPublicKey(publicKey);
  return `${name}+${keyIdOf(name, raw).toString("hex")}+${Buffer.concat([Buffer.from([ED25519]), raw]).toString("base64")}`;
}

/** Parses `<name>+<key id>+<base64 key>`, checking every part; throws an Error saying which is wrong. */
export function parseVerifierKey(text: string): VerifierKey {
  const parts = text.split("+");
  // A name has no "+", but the base64 alphabet has: the key is everything after the second "+".
  const [name = "", id = "", ...rest] = parts;
  const key = rest.join("+");
  if (parts.length < 3) throw new Error("not a verifier key: expected <name>+<key id>+<base64 key>");
  if (!isKeyName(name)) throw new Error(`verifier key: not a key name: ${JSON.stringify(name)}`);
  if (!/^[0-9a-fA-F]{8}$/.test(id)) throw new Error(`verifier key ${name}: the key id must be 8 hex digits, not ${JSON.stringify(id)}`);
  const decoded = strictBase64(key);
  if (decoded === undefined) throw new Error(`verifier key ${name}: the key is not in standard base64`);
  if (decoded[0] !== ED25519 || decoded.length !== 33) {
    throw new Error(`verifier key ${name}: not an Ed25519 key (expected the byte 0x01 and 32 bytes of key)`);
  }
  const raw = decoded.subarray(1);
  const keyId = keyIdOf(name, raw);
  if (keyId.toString("hex") !== id.toLowerCase()) throw new Error(`verifier key ${name}: the key id ${id} is not the id of the key (${keyId.toString("hex")})`);
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  return { name, keyId, publicKey, text: `${name}+${keyId.toString("hex")}+${key}` };
}

// ---- notes -----------------------------------------------------------------------------------

/** Why `text` may not be in a note, if it may not: the spec allows valid UTF-8 without control characters but newline. */
function textProblem(text: string): string | undefined {
  if (/[\u0000-\u0009\u000b-\u001f]/.test(text)) return "it holds a control character";
  // A lone surrogate has no UTF-8 encoding: Buffer.from would replace it.
  if (Buffer.from(text, "utf8").toString("utf8") !== text) return "it is not valid Unicode";
  return undefined;
}

/** `body` signed by `key`: the body, a blank line and one signature line `— <name> <base64(key id || signature)>`. */
export function signNote(body: string, key: SigningKey): string {
  const problem = textProblem(body) ?? (body.endsWith("\n") ? undefined : "it does not end with a newline");
  if (problem) throw new Error(`cannot sign a note body: ${problem}`);
  if (!isKeyName(key.name)) throw new Error(`not a key name: ${JSON.stringify(key.name)}`);
  const signature = sign(null, Buffer.from(body, "utf8"), key.privateKey);
  const keyId = keyIdOf(key.name, rawPublicKey(key.publicKey));
  return `${body}\n${EM_DASH} ${key.name} ${Buffer.concat([keyId, signature]).toString("base64")}\n`;
}

interface NoteSignature {
  name: string;
  keyId: Buffer;
  signature: Buffer;
}

/** A note split into its body and signature lines, checked for form only. */
function splitNote(note: string): { body: string; signatures: NoteSignature[] } | NoteError {
  const malformed = (why: string) => ({ error: `malformed note: ${why}` });
  const problem = textProblem(note);
  if (problem) return malformed(problem);
  // The body may hold blank lines: the signatures start after the last one.
  const split = note.lastIndexOf("\n\n");
  if (split < 0) return malformed("no blank line before the signatures");
  const lines = note.slice(split + 2);
  if (lines === "" || !lines.endsWith("\n")) return malformed("the signatures must be lines ending in a newline");
  const signatures: NoteSignature[] = [];
  for (const line of lines.slice(0, -1).split("\n")) {
    const fields = line.startsWith(`${EM_DASH} `) ? line.slice(2).split(" ") : [];
    const [name = "", encoded = ""] = fields;
    const bytes = strictBase64(encoded);
    if (fields.length !== 2 || !isKeyName(name) || bytes === undefined || bytes.length < 5) {
      return malformed(`not a signature line: ${JSON.stringify(line)}`);
    }
    signatures.push({ name, keyId: bytes.subarray(0, 4), signature: bytes.subarray(4) });
  }
  if (signatures.length > MAX_SIGNATURES) return malformed(`more than ${MAX_SIGNATURES} signatures`);
  return { body: note.slice(0, split + 1), signatures };
}

/**
 * The body of `note` if it carries a signature by `verifier` (same key name and key id) that
 * verifies. Signatures by other keys are ignored, as the spec requires; one by this key that
 * does not verify rejects the note, as it recommends.
 */
export function verifyNote(note: string, verifier: VerifierKey): { body: string } | NoteError {
  const split = splitNote(note);
  if ("error" in split) return split;
  const ours = split.signatures.find((s) => s.name === verifier.name && s.keyId.equals(verifier.keyId));
  const keyLabel = `${verifier.name}+${verifier.keyId.toString("hex")}`;
  if (ours === undefined) return { error: `no signature by key ${keyLabel}` };
  const valid = ours.signature.length === 64 && verify(null, Buffer.from(split.body, "utf8"), verifier.publicKey, ours.signature);
  return valid ? { body: split.body } : { error: `signature does not verify with key ${keyLabel}` };
}

// ---- checkpoints -----------------------------------------------------------------------------

/** The tlog-checkpoint body: origin, size in decimal and the head hash in base64, one a line. */
export function checkpointBody(checkpoint: Checkpoint): string {
  const { origin, size, headHash } = checkpoint;
  if (origin === "" || /[\u0000-\u001f]/.test(origin)) throw new Error(`not a checkpoint origin: ${JSON.stringify(origin)}`);
  if (size < 0n) throw new Error(`not a checkpoint size: ${size}`);
  if (!/^[0-9a-f]{64}$/.test(headHash)) throw new Error(`not a head hash (64 lowercase hex digits): ${JSON.stringify(headHash)}`);
  return `${origin}\n${size}\n${Buffer.from(headHash, "hex").toString("base64")}\n`;
}

/**
 * Reads a tlog-checkpoint body strictly: a non-empty origin, a size without leading zeros, a
 * 32-byte hash in standard base64, then only the non-empty extension lines the spec allows
 * (this log never writes any).
 */
export function parseCheckpointBody(body: string): Checkpoint | NoteError {
  const malformed = (why: string) => ({ error: `malformed checkpoint: ${why}` });
  if (!body.endsWith("\n")) return malformed("the body does not end with a newline");
  const [origin = "", size = "", hash = "", ...extensions] = body.slice(0, -1).split("\n");
  if (origin === "") return malformed("the origin line is empty");
  if (!/^(0|[1-9][0-9]*)$/.test(size)) return malformed(`the size line is not a decimal number: ${JSON.stringify(size)}`);
  const headHash = strictBase64(hash);
  if (headHash === undefined || headHash.length !== 32) return malformed("the hash line is not 32 bytes in base64");
  if (extensions.some((line) => line === "")) return malformed("an empty extension line");
  return { origin, size: BigInt(size), headHash: headHash.toString("hex") };
}

/** The whole signed note of a checkpoint. */
export function signCheckpoint(key: SigningKey, checkpoint: Checkpoint): string {
  return signNote(checkpointBody(checkpoint), key);
}

/** What a checkpoint note states, if `verifier` signed it. */
export function verifyCheckpointNote(note: string, verifier: VerifierKey): Checkpoint | NoteError {
  const opened = verifyNote(note, verifier);
  return "error" in opened ? opened : parseCheckpointBody(opened.body);
}

/**
 * What a checkpoint note claims, its signature NOT checked: only to describe a note before it
 * is verified (e.g. to say which checkpoint failed).
 */
export function unverifiedCheckpoint(note: string): Checkpoint | NoteError {
  const split = splitNote(note);
  return "error" in split ? split : parseCheckpointBody(split.body);
}
