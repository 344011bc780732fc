// TrustAnchors: which keys the anchor files give at start and on each re-read, what a missing or
// unreadable file means, and how often unknown key ids make it read the files again.
import { generateKeyPairSync } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { importPublicKey } from "../../src/governance/credentials.js";
import { TrustAnchors } from "../../src/governance/trust-anchors.js";
import { createLogger } from "../../src/api/logger.js";
import { tempDir } from "../helpers/temp-dir.js";

const publicPem = (): string => generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
const serverKey = await importPublicKey(publicPem(), "server");

function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { log: createLogger("debug", sink), lines };
}

async function anchorsIn(files: { required?: string[]; optional?: string[] }) {
  const { log, lines } = capturedLog();
  const anchors = await TrustAnchors.load({ required: files.required ?? [], optional: files.optional ?? [] }, [serverKey], log);
  return { anchors, lines, keyIds: () => anchors.current().map((key) => key.keyId) };
}

describe("at start", () => {
  it("takes an optional file only if it exists, and refuses a missing required one or a file that is not a key, naming it", async () => {
    const dir = tempDir();
    const { keyIds } = await anchorsIn({ optional: [join(dir, "operator.pub")] });
    expect(keyIds()).toEqual([serverKey.keyId]);
    await expect(anchorsIn({ required: [join(dir, "missing.pub")] })).rejects.toThrow(`trust anchor ${join(dir, "missing.pub")}: no such file`);
    writeFileSync(join(dir, "garbage.pub"), "not a key");
    await expect(anchorsIn({ optional: [join(dir, "garbage.pub")] })).rejects.toThrow(`trust anchor ${join(dir, "garbage.pub")}:`);
  });
});

describe("a re-read", () => {
  it("takes a new or replaced key and drops a removed one, publishing a new key list only when something changed", async () => {
    const dir = tempDir();
    const file = join(dir, "operator.pub");
    const { anchors, keyIds, lines } = await anchorsIn({ optional: [file] });
    const before = anchors.current();
    await anchors.reload("test");
    expect(anchors.current()).toBe(before);

    writeFileSync(file, publicPem());
    await anchors.reload("test");
    expect(keyIds()).toHaveLength(2);
    const added = keyIds()[0]!;
    expect(lines.at(-1)).toMatchObject({ msg: "trust anchors changed", trigger: "test", added: [{ file, keyId: added }], removed: [] });

    writeFileSync(file, publicPem());
    await anchors.reload("test");
    expect(keyIds()).not.toContain(added);
    expect(lines.at(-1)).toMatchObject({ added: [{ file }], removed: [{ file, keyId: added }] });

    rmSync(file);
    await anchors.reload("test");
    expect(keyIds()).toEqual([serverKey.keyId]);
    expect(anchors.everTrustedKeyIds()).toContain(added);
  });

  it("keeps the key a file held while the file does not read as a key (an editor halfway through), and says so", async () => {
    const dir = tempDir();
    const file = join(dir, "operator.pub");
    writeFileSync(file, publicPem());
    const { anchors, lines } = await anchorsIn({ required: [file] });
    const before = anchors.current();
    writeFileSync(file, "-----BEGIN PUBLIC KEY-----\n");
    await anchors.reload("test");
    expect(anchors.current()).toBe(before);
    expect(lines.find((line) => line.level === "error")).toMatchObject({
      file,
      msg: expect.stringMatching(/^trust anchor not read: the key it held before stays trusted/),
    });
  });
});

describe("unknown key ids", () => {
  it("make the files be read again at most once a second, however many arrive", async () => {
    const { anchors, lines } = await anchorsIn({ optional: [join(tempDir(), "operator.pub")] });
    const rereads = () => lines.filter((line) => line.trigger === "unknown key id").length;
    await Promise.all(Array.from({ length: 1000 }, () => anchors.unknownKeyId()));
    expect(rereads()).toBe(1);
    await anchors.unknownKeyId();
    expect(rereads()).toBe(1);
    await sleep(1050);
    await Promise.all(Array.from({ length: 1000 }, () => anchors.unknownKeyId()));
    expect(rereads()).toBe(2);
  });
});
