// Contract documents the end-to-end suites send, as the JSON text a client would.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./server.js";

/** The upstream example document, which satisfies the contract. */
export const exampleContractText = readFileSync(join(repoRoot, "examples/contracts/local-execution.json"), "utf8");

/** The example with `controls.ambientAuthority` set to true, which the contract forbids. */
export function ambientAuthorityContractText(): string {
  const document = JSON.parse(exampleContractText) as { controls: { ambientAuthority: boolean } };
  document.controls.ambientAuthority = true;
  return JSON.stringify(document);
}
