// The checkpoint signing key file: created once, readable by its owner only, read back as the same
// key; anything but an Ed25519 private key is refused, naming the file and never quoting it.
import { generateKeyPairSync } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadOrCreateAuditKey, readVerifierKeyFile } from "../../src/audit/audit-key.js";
import { parseVerifierKey, signCheckpoint, verifyCheckpointNote } from "../../src/audit/signed-note.js";
import { tempDir } from "../helpers/temp-dir.js";

const NAME = "agentmachine.local/audit/test";

describe("audit key file", () => {
  it("is created with its directory, for its owner only, and read back as the same key", () => {
    const dir = join(tempDir(), "keys", "audit");
    const file = join(dir, "audit.key");
    const created = loadOrCreateAuditKey(file, NAME);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(readdirSync(dir)).toEqual(["audit.key"]);

    const loaded = loadOrCreateAuditKey(file, NAME);
    expect(loaded.verifierKey).toBe(created.verifierKey);
    expect(parseVerifierKey(loaded.verifierKey).name).toBe(NAME);
    const checkpoint = { origin: NAME, size: 3n, headHash: "cd".repeat(32) };
    expect(verifyCheckpointNote(signCheckpoint(created, checkpoint), parseVerifierKey(loaded.verifierKey))).toEqual(checkpoint);
  });

  it("is never replaced by a new key", () => {
    const file = join(tempDir(), "audit.key");
    const { privateKey } = generateKeyPairSync("ed25519");
    writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const before = readFileSync(file);
    loadOrCreateAuditKey(file, NAME);
    expect(readFileSync(file)).toEqual(before);
  });

  it("refuses anything but an Ed25519 private key, naming the file and not quoting it", () => {
    const dir = tempDir();
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
    const ed25519 = generateKeyPairSync("ed25519");
    const cases: [string, string, RegExp][] = [
      ["rsa.key", rsa.privateKey.export({ type: "pkcs8", format: "pem" }) as string, /rsa\.key holds a rsa key, not an Ed25519 private key$/],
      ["public.pem", ed25519.publicKey.export({ type: "spki", format: "pem" }) as string, /public\.pem is not a PEM \(PKCS#8\) private key$/],
      ["garbled.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", /garbled\.key is not a PEM \(PKCS#8\) private key$/],
      ["empty.key", "", /empty\.key is not a PEM \(PKCS#8\) private key$/],
    ];
    for (const [name, content, message] of cases) {
      writeFileSync(join(dir, name), content);
      let error: Error | undefined;
      try {
        loadOrCreateAuditKey(join(dir, name), NAME);
      } catch (caught) {
        error = caught as Error;
      }
      expect(error?.message).toMatch(message);
      expect(error?.message).toContain(join(dir, name));
      expect(error?.message).not.toContain("MII");
    }
  });

  it("refuses a key name a verifier key cannot hold", () => {
    expect(() => loadOrCreateAuditKey(join(tempDir(), "audit.key"), "has space")).toThrow("not a key name");
  });
});

describe("verifier key file", () => {
  it("is read trimmed, and checked, naming the file", () => {
    const dir = tempDir();
    const key = loadOrCreateAuditKey(join(dir, "audit.key"), NAME);
    writeFileSync(join(dir, "audit.vkey"), `\n  ${key.verifierKey}\n\n`);
    expect(readVerifierKeyFile(join(dir, "audit.vkey"))).toBe(key.verifierKey);
    writeFileSync(join(dir, "bad.vkey"), key.verifierKey.slice(0, -2));
    expect(() => readVerifierKeyFile(join(dir, "bad.vkey"))).toThrow(`${join(dir, "bad.vkey")}: verifier key ${NAME}: the key is not in standard base64`);
  });
});
