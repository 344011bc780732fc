// The keys credentials may be signed with: the operators' public keys, read from the trust
// anchor files (`amctl init`'s DATA_DIR/operator/operator.pub and every --trust-anchor), and
// the server's own key (which signs children only). The files are read at start and again
// whenever they may have changed — a watch on them, SIGHUP, or a credential naming a key id
// none of them holds — so a running server takes up `amctl init` and a rotated key without a
// restart. Re-reads for unknown key ids happen at most once a second: a flood of forged ids
// costs a few small file reads, not one per call.
//
// A file that is gone no longer vouches for its key (that is how an operator withdraws one). A
// file that is there but is not a key (an editor halfway through writing it) keeps the key it
// held before, with an error in the log, until it reads as a key again.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { Logger } from "../api/logger.js";
import type { TrustedKeys } from "./authority.js";
import { importPublicKey, type PublicKeyEntry } from "./credentials.js";

export interface TrustAnchorFiles {
  /** Files that must hold a key at start (--trust-anchor). */
  required: readonly string[];
  /** Files taken when they exist (DATA_DIR/operator/operator.pub, which `amctl init` writes). */
  optional: readonly string[];
}

/** Re-reads caused by unknown key ids are at least this far apart. */
const UNKNOWN_KEY_REREAD_MS = 1000;

/** The key in `file`; undefined if there is no such file; throws naming the file if it is not a key. */
async function readAnchor(file: string): Promise<PublicKeyEntry | undefined> {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`trust anchor ${file}: ${(error as Error).message}`);
  }
  try {
    return await importPublicKey(pem, "operator");
  } catch (error) {
    throw new Error(`trust anchor ${file}: ${(error as Error).message}`);
  }
}

const described = (file: string, key: PublicKeyEntry) => ({ file, keyId: key.keyId });

export class TrustAnchors implements TrustedKeys {
  /** The key each file held when it was last read as one. */
  private readonly byFile = new Map<string, PublicKeyEntry>();
  private keys: readonly PublicKeyEntry[] = [];
  private readonly everTrusted = new Set<string>();
  /** Re-reads run one after another, so an older one never overwrites a newer one's keys. */
  private reading: Promise<void> = Promise.resolve();
  private unknownKeyReread: { at: number; done: Promise<void> } | undefined;

  private constructor(
    private readonly files: TrustAnchorFiles,
    private readonly fixed: readonly PublicKeyEntry[],
    private readonly log: Logger,
  ) {}

  /** Reads the anchors at start: a required file that is missing, or any file that is not a key, stops the start. */
  static async load(files: TrustAnchorFiles, fixed: readonly PublicKeyEntry[], log: Logger): Promise<TrustAnchors> {
    const anchors = new TrustAnchors(files, fixed, log);
    for (const file of [...files.required, ...files.optional]) {
      const key = await readAnchor(file);
      if (key !== undefined) anchors.byFile.set(file, key);
      else if (files.required.includes(file)) throw new Error(`trust anchor ${file}: no such file`);
    }
    anchors.publish();
    return anchors;
  }

  current(): readonly PublicKeyEntry[] {
    return this.keys;
  }

  /** The files that hold a trusted key now. */
  anchorFiles(): string[] {
    return [...this.byFile.keys()];
  }

  /**
   * Every key id trusted since the server started, its own included: a credential signed with a
   * key withdrawn since is still a credential, to be redacted wherever it turns up.
   */
  everTrustedKeyIds(): string[] {
    return [...this.everTrusted];
  }

  unknownKeyId(): Promise<void> {
    const now = performance.now();
    if (this.unknownKeyReread === undefined || now - this.unknownKeyReread.at >= UNKNOWN_KEY_REREAD_MS) {
      this.unknownKeyReread = { at: now, done: this.reload("unknown key id") };
    }
    return this.unknownKeyReread.done;
  }

  /** Reads every anchor file again and logs what changed (`trigger` says why it was read). Never rejects. */
  reload(trigger: string): Promise<void> {
    this.reading = this.reading.then(() =>
      this.reread(trigger).catch((error: unknown) => this.log.error({ err: error, trigger }, "could not re-read the trust anchors")),
    );
    return this.reading;
  }

  private async reread(trigger: string): Promise<void> {
    const added: { file: string; keyId: string }[] = [];
    const removed: { file: string; keyId: string }[] = [];
    for (const file of [...this.files.required, ...this.files.optional]) {
      const before = this.byFile.get(file);
      let key: PublicKeyEntry | undefined;
      try {
        key = await readAnchor(file);
      } catch (error) {
        this.log.error(
          { trigger, file, problem: (error as Error).message },
          "trust anchor not read: the key it held before stays trusted until it reads as a key",
        );
        continue;
      }
      if (key?.keyId === before?.keyId) continue;
      if (before !== undefined) removed.push(described(file, before));
      if (key !== undefined) added.push(described(file, key));
      if (key === undefined) this.byFile.delete(file);
      else this.byFile.set(file, key);
    }
    if (added.length === 0 && removed.length === 0) {
      this.log.debug({ trigger }, "trust anchors re-read: unchanged");
      return;
    }
    this.publish();
    this.log.info({ trigger, added, removed, anchors: this.anchorFiles() }, "trust anchors changed");
    if (this.byFile.size === 0) this.log.warn("no trust anchor left: no credential can be valid until one is back");
  }

  /** Makes the keys read so far the current ones (a new array, so caches keyed on it start over). */
  private publish(): void {
    this.keys = [...this.byFile.values(), ...this.fixed];
    for (const key of this.keys) this.everTrusted.add(key.keyId);
  }
}
