// The operator's Ed25519 key pair: the root of all authority. `amctl init` writes the public key
// into `<dataDir>/operator/operator.pub`, the server's trust anchor, and the private key
// outside the data dir: where `--key-out` says, or in a per-user place (below). The data dir is
// what the server and its executions live in; a private key there could be read by anything
// running as the server's user and used to sign a root credential. Only `amctl delegation root`
// reads the private key.
//
// The per-user place: `<config>/operator-keys/<id>.key`, where `<config>` is `$AMCTL_CONFIG_DIR`,
// else `$XDG_CONFIG_HOME/amctl` (when absolute, as the XDG spec asks), else `~/.config/amctl`,
// and `<id>` the first 16 hex digits of the SHA-256 of the data dir's resolved path (symlinks
// followed). One file per data dir, so one user may run several (a test server, a real one)
// each with its own operator key, and `delegation root --data-dir DIR` finds the right one
// without a registry to keep in step; the file name does not spell out the data dir's path.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, realpathSync, unlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { importSigningKey, type SigningKey } from "./credentials.js";

/** What a data dir holds of the operator key: the public key, and where an older `amctl init` left the private one. */
export function operatorKeyFiles(dataDir: string): { publicKey: string; legacyPrivateKey: string } {
  const dir = join(dataDir, "operator");
  return { publicKey: join(dir, "operator.pub"), legacyPrivateKey: join(dir, "operator.key") };
}

/**
 * The warning a server logs at start when an older `amctl init` left the private key in its
 * data dir; undefined when it did not. The server still starts: the key is the operator's to move.
 */
export function legacyOperatorKeyWarning(dataDir: string): string | undefined {
  const file = operatorKeyFiles(dataDir).legacyPrivateKey;
  if (!existsSync(file)) return undefined;
  return `the operator private key is in the data dir (${file}), in reach of executions and anything else running as this user, which could sign a root credential with it: ${moveKeyHint(dataDir)}`;
}

/** A path with its symlinks followed as far as it exists (the rest appended as given). */
function resolvedPath(path: string): string {
  const absolute = resolve(path);
  if (existsSync(absolute)) return realpathSync.native(absolute);
  const parent = dirname(absolute);
  return parent === absolute ? absolute : join(resolvedPath(parent), basename(absolute));
}

/** The directory of the per-user operator keys under `env`. */
export function operatorKeyDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AMCTL_CONFIG_DIR) return join(resolve(env.AMCTL_CONFIG_DIR), "operator-keys");
  const xdg = env.XDG_CONFIG_HOME;
  const config = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), ".config");
  return join(config, "amctl", "operator-keys");
}

/** Where `amctl init` puts the private key of `dataDir` unless told otherwise, and where `amctl delegation root` looks. */
export function defaultPrivateKeyFile(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const id = createHash("sha256").update(resolvedPath(dataDir)).digest("hex").slice(0, 16);
  return join(operatorKeyDir(env), `${id}.key`);
}

/** Refuses a private key file inside the data dir, where executions and the server's user could read it. */
export function assertOutsideDataDir(dataDir: string, privateKeyFile: string): void {
  const rel = relative(resolvedPath(dataDir), resolvedPath(privateKeyFile));
  if (rel === "" || !(rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel))) {
    throw new Error(
      `refusing to put the operator private key at ${privateKeyFile}: it lies inside the data dir ${dataDir}, in reach of every execution and anything else running as the server's user; choose a file elsewhere with --key-out FILE`,
    );
  }
}

/** Writes a private key PEM: mode 0600, never over an existing file, directories created 0700. */
function writePrivateKey(file: string, pem: string): void {
  if (existsSync(file))
    throw new Error(`an operator private key already exists at ${file}; refusing to overwrite it (choose another file with --key-out FILE)`);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, pem, { mode: 0o600, flag: "wx" });
}

/** How to move a private key an older `amctl init` left in the data dir. */
export function moveKeyHint(dataDir: string): string {
  return `move it out with \`amctl init --move-key --data-dir ${dataDir}\` (to the per-user place, or --key-out FILE)`;
}

/**
 * Creates the key pair: the public key in the data dir, the private key at `privateKeyFile`
 * (outside it). Refuses to replace an existing key of the data dir or to overwrite any file.
 */
export function createOperatorKey(dataDir: string, privateKeyFile: string): { privateKey: string; publicKey: string } {
  const files = operatorKeyFiles(dataDir);
  assertOutsideDataDir(dataDir, privateKeyFile);
  if (existsSync(files.legacyPrivateKey)) {
    throw new Error(
      `an operator key already exists in ${dirname(files.publicKey)}; refusing to replace it. Its private key is still in the data dir: ${moveKeyHint(dataDir)}`,
    );
  }
  if (existsSync(files.publicKey)) throw new Error(`an operator key already exists in ${dirname(files.publicKey)}; refusing to replace it`);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  writePrivateKey(privateKeyFile, privateKey.export({ type: "pkcs8", format: "pem" }).toString());
  try {
    mkdirSync(dirname(files.publicKey), { recursive: true, mode: 0o700 });
    writeFileSync(files.publicKey, publicKey.export({ type: "spki", format: "pem" }), { mode: 0o644, flag: "wx" });
  } catch (error) {
    unlinkSync(privateKeyFile); // a private key without its trust anchor would only confuse
    throw error;
  }
  return { privateKey: privateKeyFile, publicKey: files.publicKey };
}

/**
 * Moves the private key an older `amctl init` left at `<dataDir>/operator/operator.key` to
 * `privateKeyFile` (outside the data dir, mode 0600, never over an existing file), then removes
 * it from the data dir. The public key stays.
 */
export function moveLegacyOperatorKey(dataDir: string, privateKeyFile: string): { privateKey: string; publicKey: string; from: string } {
  const files = operatorKeyFiles(dataDir);
  if (!existsSync(files.legacyPrivateKey)) throw new Error(`there is no operator private key in the data dir to move (no ${files.legacyPrivateKey})`);
  assertOutsideDataDir(dataDir, privateKeyFile);
  const pem = readFileSync(files.legacyPrivateKey, "utf8");
  createPrivateKey(pem); // a file that is not a key is left where it is
  writePrivateKey(privateKeyFile, pem);
  if (readFileSync(privateKeyFile, "utf8") !== pem)
    throw new Error(`the copy at ${privateKeyFile} differs from ${files.legacyPrivateKey}; the data dir still holds the key`);
  unlinkSync(files.legacyPrivateKey);
  return { privateKey: privateKeyFile, publicKey: files.publicKey, from: files.legacyPrivateKey };
}

/** Reads an operator private key file (PKCS#8 PEM, as `amctl init` writes it); the public half is derived from it. */
export async function readOperatorSigningKey(privateKeyFile: string): Promise<SigningKey> {
  const pem = readFileSync(privateKeyFile, "utf8");
  const publicPem = createPublicKey(createPrivateKey(pem)).export({ type: "spki", format: "pem" }).toString();
  return importSigningKey(pem, publicPem, "operator");
}
