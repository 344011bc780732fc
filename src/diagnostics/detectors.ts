// The detector pipeline of a diagnostics export, in the order it runs: the server's own secrets
// and the values it knows to be secret first, then credential and key shapes, then the
// judgements by field. The same list scans the final bytes.
import type { Detector } from "./detector.js";
import { promptFieldDetector, secretFieldEntropyDetector } from "./field-detectors.js";
import { knownValuesDetector } from "./known-values.js";
import { issuedCredentialDetector, shapeDetectors } from "./pattern-detectors.js";

export interface KnownSecrets {
  /** Key ids (`kid`) of the keys whose credentials the server accepts: its operators' and its own. */
  credentialKeyIds: readonly string[];
  /** Values the server holds for itself: private keys (PEM), MAC keys, the credential it runs with. */
  localSecrets: readonly string[];
  /** Environment values: of the executions in the bundle, and of the server's secret-named variables. */
  envSecrets: readonly string[];
}

/**
 * Whether an environment value is worth searching for everywhere: not a plain lowercase or
 * uppercase word (`production`, `INFO`), a number or a path. Those cannot be told from the
 * identifiers a bundle is made of — searching for them would redact a profile named like them
 * — and, like every env value, they are kept out by the allowlist anyway.
 */
export function distinctive(value: string): boolean {
  return !/^(?:[a-z]+(?:[-_.][a-z]+)*|[A-Z]+(?:[-_.][A-Z]+)*|\d+|\/[\w./-]*)$/.test(value);
}

export function defaultDetectors(secrets: KnownSecrets): Detector[] {
  return [
    knownValuesDetector("local-secret", "localSecrets", secrets.localSecrets),
    knownValuesDetector("secret-env-value", "localSecrets", secrets.envSecrets.filter(distinctive)),
    issuedCredentialDetector(secrets.credentialKeyIds),
    ...shapeDetectors,
    secretFieldEntropyDetector,
    promptFieldDetector,
  ];
}

/** Names of environment variables whose values are secret (`AMCTL_PROVIDER_…`: model providers' keys, ModelProviderBindSpec.api_key_ref). */
export const SECRET_ENV_NAME =
  /^AMCTL_PROVIDER_|pass(?:word|wd)?|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential|auth|session|cookie|signature|(?:^|_)key(?:_|$)|dsn|database_url/i;

/** The values of the secret-named variables of `env` (the server's own environment). */
export function secretEnvValues(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env).flatMap(([name, value]) => (value !== undefined && SECRET_ENV_NAME.test(name) ? [value] : []));
}
