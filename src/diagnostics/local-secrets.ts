// The secrets the server holds for itself, which no bundle may carry in any encoding: the
// operator's private key when it is in the data dir (where an older `amctl init` put it), the server's
// own signing key, the audit signing key, the MAC keys of page tokens and call tickets, and
// the model providers' keys in DATA_DIR/provider-keys.
import { existsSync, readFileSync } from "node:fs";
import { operatorKeyFiles } from "../governance/operator-key.js";
import { providerKeyFileValues } from "../governance/provider-keys.js";
import type { StoreSecrets } from "../store/store.js";

/** The store secret under which src/governance/server-key.ts keeps the server's key pair (JSON with a `pkcs8` PEM). */
const SERVER_KEY_SECRET = "server-signing-key";

function serverPrivateKey(stored: string): string[] {
  try {
    const { pkcs8 } = JSON.parse(stored) as { pkcs8?: unknown };
    return typeof pkcs8 === "string" ? [pkcs8, stored] : [stored];
  } catch {
    return [stored];
  }
}

/**
 * `held` are secrets the server already holds in memory (the page-token and call-ticket MAC
 * keys, the audit signing key as PEM). The server key is read from the store, where it exists once the server
 * started; the operator key from the data dir, if an older `amctl init` left it there (the server
 * never reads the per-user place where `amctl init` puts it now).
 */
export async function localSecrets(store: StoreSecrets, dataDir: string, held: readonly string[]): Promise<string[]> {
  const secrets = [...held];
  // It exists once the server started, so the empty value offered for a missing one is never stored.
  const serverKey = await store.getOrCreateSecret(SERVER_KEY_SECRET, () => "");
  secrets.push(...serverPrivateKey(serverKey));
  const operatorKey = operatorKeyFiles(dataDir).legacyPrivateKey;
  if (existsSync(operatorKey)) secrets.push(readFileSync(operatorKey, "utf8"));
  // Model providers' keys the gateway sends upstream (file references; env ones are secret-named).
  secrets.push(...providerKeyFileValues(dataDir));
  return secrets;
}
