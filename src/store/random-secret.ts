// What OperationStore.getOrCreateSecret stores when a key is first needed: 256 random bits.
import { randomBytes } from "node:crypto";

export function randomSecret(): string {
  return randomBytes(32).toString("base64url");
}
