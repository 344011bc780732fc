// The key that signs the audit log's checkpoints: Ed25519, one file holding the PKCS#8 PEM of
// the private key (the public half is derived from it). Whoever holds this key and can write the
// store can rewrite the whole log undetectably, so the file lives apart from the database: on the
// server host, mode 0600 (docs/audit.md). Its contents are never logged.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { parseVerifierKey, verifierKeyString } from "./signed-note.js";

export interface AuditKey {
  /** The key name in signature lines and in the verifier key; by convention the log's origin. */
  name: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** `<name>+<key id>+<base64 key>`: what verifiers are given. */
  verifierKey: string;
}

/** Reads the key in `file`, creating the file with a new key first if there is none. */
export function loadOrCreateAuditKey(file: string, name: string): AuditKey {
  const privateKey = readPrivateKey(file) ?? createKeyFile(file);
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new Error(`${file} holds a ${privateKey.asymmetricKeyType ?? "unknown"} key, not an Ed25519 private key`);
  }
  const publicKey = createPublicKey(privateKey);
  return { name, privateKey, publicKey, verifierKey: verifierKeyString(name, publicKey) };
}

/** The private key in `file`; undefined if there is no such file. */
function readPrivateKey(file: string): KeyObject | undefined {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  try {
    return createPrivateKey(pem);
  } catch (cause) {
    // The cause is OpenSSL's message, which never quotes the file's contents.
    throw new Error(`${file} is not a PEM (PKCS#8) private key`, { cause });
  }
}

/**
 * Writes a new key to `file`, readable by this user only. It appears whole or not at all: written
 * to a temporary file, synced, then hard-linked into place. A link, unlike a rename, fails if
 * another process (a second replica starting) created the key meanwhile; then that key is used,
 * so that both sign with the same one.
 */
function createKeyFile(file: string): KeyObject {
  const { privateKey } = generateKeyPairSync("ed25519");
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const fd = openSync(temporary, "wx", 0o600);
    try {
      writeSync(fd, privateKey.export({ type: "pkcs8", format: "pem" }) as string);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(temporary, file);
    } catch (error) {
      const theirs = (error as NodeJS.ErrnoException).code === "EEXIST" ? readPrivateKey(file) : undefined;
      if (theirs === undefined) throw error;
      return theirs;
    }
    return privateKey;
  } finally {
    rmSync(temporary, { force: true });
  }
}

/** The verifier key written in `file` (surrounding whitespace ignored), checked to be one. */
export function readVerifierKeyFile(file: string): string {
  const text = readFileSync(file, "utf8").trim();
  try {
    parseVerifierKey(text);
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`);
  }
  return text;
}
