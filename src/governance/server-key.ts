// The server's own Ed25519 key, kept in the store (the only durable state) and created on
// first start. It signs the child delegations the server issues for authorized callers; it
// never authorizes anything by itself: a child is valid only below a root an operator signed.
import { generateKeyPairSync } from "node:crypto";
import type { StoreSecrets } from "../store/store.js";
import { importPublicKey, importSigningKey, type PublicKeyEntry, type SigningKey } from "./credentials.js";

export async function loadServerKey(store: StoreSecrets): Promise<{ signing: SigningKey; verifying: PublicKeyEntry }> {
  const stored = await store.getOrCreateSecret("server-signing-key", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    return JSON.stringify({
      pkcs8: privateKey.export({ type: "pkcs8", format: "pem" }),
      spki: publicKey.export({ type: "spki", format: "pem" }),
    });
  });
  const { pkcs8, spki } = JSON.parse(stored) as { pkcs8: string; spki: string };
  return { signing: await importSigningKey(pkcs8, spki, "server"), verifying: await importPublicKey(spki, "server") };
}
