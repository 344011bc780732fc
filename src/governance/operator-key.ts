// The operator's Ed25519 key pair: the root of all authority. `amctl init` writes it into
// `<dataDir>/operator/`; the private key file is mode 0600 and only `amctl delegation root`
// reads it — the server reads only the public key, as a trust anchor.
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { importSigningKey, type SigningKey } from "./credentials.js";

export function operatorKeyFiles(dataDir: string): { privateKey: string; publicKey: string } {
  const dir = join(dataDir, "operator");
  return { privateKey: join(dir, "operator.key"), publicKey: join(dir, "operator.pub") };
}

/** Creates the key pair; refuses to overwrite an existing one. */
export function createOperatorKey(dataDir: string): { privateKey: string; publicKey: string } {
  const files = operatorKeyFiles(dataDir);
  if (existsSync(files.privateKey) || existsSync(files.publicKey)) {
    throw new Error(`an operator key already exists in ${dirname(files.privateKey)}; refusing to replace it`);
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  mkdirSync(dirname(files.privateKey), { recursive: true, mode: 0o700 });
  writeFileSync(files.privateKey, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600, flag: "wx" });
  writeFileSync(files.publicKey, publicKey.export({ type: "spki", format: "pem" }), { mode: 0o644, flag: "wx" });
  return files;
}

/** Reads a private key file written by createOperatorKey, with its public half beside it. */
export async function readOperatorSigningKey(privateKeyFile: string): Promise<SigningKey> {
  const publicKeyFile = privateKeyFile.replace(/\.key$/, ".pub");
  return importSigningKey(readFileSync(privateKeyFile, "utf8"), readFileSync(publicKeyFile, "utf8"), "operator");
}
