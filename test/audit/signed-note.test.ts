// Signed notes and checkpoints: byte for byte what the C2SP specs and the Go reference
// implementation produce, and verification that accepts only a signature by the given key over
// the unchanged body.
import { createHash, createPrivateKey, createPublicKey, sign } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AuditKey } from "../../src/audit/audit-key.js";
import {
  checkpointBody,
  parseCheckpointBody,
  parseVerifierKey,
  signCheckpoint,
  signNote,
  verifierKeyString,
  verifyCheckpointNote,
  verifyNote,
} from "../../src/audit/signed-note.js";
import { newAuditKey } from "./audit-log-fixture.js";

// The example of golang.org/x/mod/sumdb/note's tests: a key pair, a text and the note Go signs.
const GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE = `${GO_TEXT}\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n`;

/** The Go signer key as an AuditKey: its last field is 0x01 then the 32-byte Ed25519 seed, wrapped here in PKCS#8 by hand. */
function goKey(): AuditKey {
  const seed = Buffer.from(GO_SIGNER_KEY.split("+").slice(4).join("+"), "base64").subarray(1);
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  const privateKey = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  const publicKey = createPublicKey(privateKey);
  return { name: "PeterNeumann", privateKey, publicKey, verifierKey: verifierKeyString("PeterNeumann", publicKey) };
}

const bytes = (...parts: (string | number[] | Buffer)[]) => Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : Buffer.from(p))));

describe("signed notes", () => {
  it("sign and verify exactly as the Go reference implementation", () => {
    const key = goKey();
    expect(key.verifierKey).toBe(GO_VERIFIER_KEY);
    expect(signNote(GO_TEXT, key)).toBe(GO_NOTE);
    expect(verifyNote(GO_NOTE, parseVerifierKey(GO_VERIFIER_KEY))).toEqual({ body: GO_TEXT });
  });

  it("encode a checkpoint byte for byte as the specs say", () => {
    const key = goKey();
    const origin = "agentmachine.local/audit/known-answer";
    const head = createHash("sha256").update("record 1000").digest();
    // The raw public key is the tail of its SPKI encoding; the key id and the lines are built by hand.
    const raw = key.publicKey.export({ type: "spki", format: "der" }).subarray(-32);
    const keyId = createHash("sha256")
      .update(bytes(key.name, [0x0a, 0x01], raw))
      .digest()
      .subarray(0, 4);
    const body = bytes(origin, [0x0a], "1000", [0x0a], head.toString("base64"), [0x0a]);
    const signature = sign(null, body, key.privateKey); // Ed25519 is deterministic (RFC 8032)
    const note = bytes(body, [0x0a], [0xe2, 0x80, 0x94, 0x20], key.name, [0x20], bytes(keyId, signature).toString("base64"), [0x0a]);

    expect(key.verifierKey).toBe(`${key.name}+${keyId.toString("hex")}+${bytes([0x01], raw).toString("base64")}`);
    const checkpoint = { origin, size: 1000n, headHash: head.toString("hex") };
    expect(Buffer.from(checkpointBody(checkpoint), "utf8")).toEqual(body);
    expect(Buffer.from(signCheckpoint(key, checkpoint), "utf8")).toEqual(note);
    expect(verifyCheckpointNote(note.toString("utf8"), parseVerifierKey(key.verifierKey))).toEqual(checkpoint);
  });

  it("round-trip any checkpoint", () => {
    const key = newAuditKey();
    const verifier = parseVerifierKey(key.verifierKey);
    const checkpoint = fc.record({
      origin: fc.stringMatching(/^[a-z0-9][a-z0-9./_-]{0,40}$/),
      size: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      headHash: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex")),
    });
    fc.assert(
      fc.property(checkpoint, (cp) => {
        expect(parseCheckpointBody(checkpointBody(cp))).toEqual(cp);
        expect(verifyCheckpointNote(signCheckpoint(key, cp), verifier)).toEqual(cp);
      }),
      { numRuns: 200 },
    );
  });

  const key = newAuditKey("audit.example/log");
  const verifier = parseVerifierKey(key.verifierKey);
  const label = `audit.example/log+${verifier.keyId.toString("hex")}`;
  const body = checkpointBody({ origin: "audit.example/log", size: 42n, headHash: "ab".repeat(32) });
  const note = signNote(body, key);
  const signatureLine = note.slice(body.length + 1);

  it("reject a note signed by another key with the same name", () => {
    const impostor = newAuditKey("audit.example/log");
    expect(verifyNote(signNote(body, impostor), verifier)).toEqual({ error: `no signature by key ${label}` });
  });

  it("reject a note whose body changed in any byte", () => {
    for (let i = 0; i < body.length; i++) {
      const changed = body.slice(0, i) + String.fromCharCode(body.charCodeAt(i) ^ 0x01) + note.slice(i + 1);
      expect(verifyNote(changed, verifier)).toHaveProperty("error");
    }
    expect(verifyNote(`${body.replace("42", "43")}\n${signatureLine}`, verifier)).toEqual({ error: `signature does not verify with key ${label}` });
  });

  /** Our signature line with byte `index` of its key id and signature flipped. */
  const flipped = (index: number) => {
    const blob = Buffer.from(signatureLine.trimEnd().split(" ")[2] as string, "base64");
    blob[index] = (blob[index] as number) ^ 0xff;
    return `— audit.example/log ${blob.toString("base64")}\n`;
  };

  it("ignore a signature line with the wrong key id, and signatures by other keys", () => {
    const other = signNote(body, newAuditKey("witness.example")).slice(body.length + 1);
    expect(verifyNote(`${body}\n${flipped(0)}`, verifier)).toEqual({ error: `no signature by key ${label}` });
    expect(verifyNote(`${body}\n${flipped(0)}${other}${signatureLine}`, verifier)).toEqual({ body });
  });

  it("reject the note when a signature by the key does not verify, even beside one that does", () => {
    expect(verifyNote(`${body}\n${flipped(30)}`, verifier)).toEqual({ error: `signature does not verify with key ${label}` });
    expect(verifyNote(`${body}\n${flipped(30)}${signatureLine}`, verifier)).toEqual({ error: `signature does not verify with key ${label}` });
  });

  it("reject malformed notes, saying why", () => {
    const cases: [string, string][] = [
      [body + signatureLine, "no blank line before the signatures"],
      [`${body}\n`, "the signatures must be lines ending in a newline"],
      [`${body}\n${signatureLine.trimEnd()}`, "the signatures must be lines ending in a newline"],
      [`${body}\n${signatureLine.replace("—", "--")}`, "not a signature line"],
      [`${body}\n${signatureLine.replace("— ", "—  ")}`, "not a signature line"],
      [`${body}\n${signatureLine.replace(/=?\n$/, "\n")}`, "not a signature line"],
      [`${body}\n— audit.example/log AAAA\n`, "not a signature line"],
      [`${body.replace("log", "l\tog")}\n${signatureLine}`, "it holds a control character"],
      [`${body.replace("log", "l\ud800og")}\n${signatureLine}`, "it is not valid Unicode"],
      [`${body}\n${signatureLine.repeat(101)}`, "more than 100 signatures"],
    ];
    for (const [text, why] of cases) expect((verifyNote(text, verifier) as { error: string }).error).toContain(`malformed note: ${why}`);
  });

  it("refuse to sign a body a note cannot hold", () => {
    expect(() => signNote("no newline", key)).toThrow("it does not end with a newline");
    expect(() => signNote("a\rb\n", key)).toThrow("it holds a control character");
    expect(() => signNote("x\n", { ...key, name: "a b" })).toThrow("not a key name");
  });
});

describe("verifier keys", () => {
  it("parse the reference key and refuse every substring and every one-byte change of it", () => {
    const parsed = parseVerifierKey(GO_VERIFIER_KEY);
    expect(parsed).toMatchObject({ name: "PeterNeumann", keyId: Buffer.from("c74f20a3", "hex"), text: GO_VERIFIER_KEY });
    for (let i = 0; i <= GO_VERIFIER_KEY.length; i++) {
      for (let j = i + 1; j <= GO_VERIFIER_KEY.length; j++) {
        if (i !== 0 || j !== GO_VERIFIER_KEY.length) expect(() => parseVerifierKey(GO_VERIFIER_KEY.slice(i, j))).toThrow();
      }
    }
    for (let i = 0; i < GO_VERIFIER_KEY.length; i++) {
      const changed = GO_VERIFIER_KEY.slice(0, i) + String.fromCharCode(GO_VERIFIER_KEY.charCodeAt(i) + 1) + GO_VERIFIER_KEY.slice(i + 1);
      expect(() => parseVerifierKey(changed)).toThrow();
    }
  });

  it("say what is wrong with a key", () => {
    const [name, id, key] = ["PeterNeumann", "c74f20a3", "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"];
    const cases: [string, string][] = [
      ["PeterNeumann", "expected <name>+<key id>+<base64 key>"],
      [`Peter Neumann+${id}+${key}`, "not a key name"],
      [`+${id}+${key}`, "not a key name"],
      [`${name}+c74f20a+${key}`, "the key id must be 8 hex digits"],
      [`${name}+${id}+${key.slice(0, -1)}`, "the key is not in standard base64"],
      [`${name}+${id}+${Buffer.concat([Buffer.from([2]), Buffer.from(key, "base64").subarray(1)]).toString("base64")}`, "not an Ed25519 key"],
      [`${name}+${id}+${Buffer.from(key, "base64").subarray(0, 30).toString("base64")}`, "not an Ed25519 key"],
      [`${name}+c74f20a4+${key}`, "the key id c74f20a4 is not the id of the key (c74f20a3)"],
    ];
    for (const [text, why] of cases) expect(() => parseVerifierKey(text)).toThrow(why);
  });

  it("accept the key id in either case, and give the key back in lowercase", () => {
    expect(parseVerifierKey(GO_VERIFIER_KEY.replace("c74f20a3", "C74F20A3")).text).toBe(GO_VERIFIER_KEY);
  });
});

describe("checkpoint bodies", () => {
  const hash = Buffer.alloc(32, 7).toString("base64");

  it("are read strictly, extension lines allowed", () => {
    expect(parseCheckpointBody(`o.example/log\n0\n${hash}\n`)).toEqual({ origin: "o.example/log", size: 0n, headHash: "07".repeat(32) });
    expect(parseCheckpointBody(`o.example/log\n12\n${hash}\next one\next two\n`)).toMatchObject({ size: 12n });
    const cases: [string, string][] = [
      [`o\n12\n${hash}`, "the body does not end with a newline"],
      [`\n12\n${hash}\n`, "the origin line is empty"],
      [`o\n012\n${hash}\n`, "the size line is not a decimal number"],
      [`o\n+12\n${hash}\n`, "the size line is not a decimal number"],
      [`o\n 12\n${hash}\n`, "the size line is not a decimal number"],
      [`o\n12\n`, "the hash line is not 32 bytes in base64"],
      [`o\n12\n${Buffer.alloc(31).toString("base64")}\n`, "the hash line is not 32 bytes in base64"],
      [`o\n12\n${hash.replace("=", "")}\n`, "the hash line is not 32 bytes in base64"],
      [`o\n12\n${hash}\n\n`, "an empty extension line"],
    ];
    for (const [text, why] of cases) expect((parseCheckpointBody(text) as { error: string }).error).toMatch(new RegExp(`^malformed checkpoint: ${why}`));
  });

  it("are written only from valid fields", () => {
    const headHash = "ab".repeat(32);
    expect(() => checkpointBody({ origin: "", size: 1n, headHash })).toThrow("not a checkpoint origin");
    expect(() => checkpointBody({ origin: "a\nb", size: 1n, headHash })).toThrow("not a checkpoint origin");
    expect(() => checkpointBody({ origin: "a", size: -1n, headHash })).toThrow("not a checkpoint size");
    expect(() => checkpointBody({ origin: "a", size: 1n, headHash: headHash.toUpperCase() })).toThrow("not a head hash");
  });
});
