// Detectors of secret shapes: credentials, tokens and keys recognisable by how they look, in any
// string. Each pattern is written so that it never matches a redaction placeholder
// (`[redacted]`, `[redacted:id]`) nor the identifiers a bundle is full of (ULIDs, hex digests,
// resource names), so the final scan of a clean bundle finds nothing.
import { matchSpans, patternDetector, type Detector, type Span, type Where } from "./detector.js";

/** A JWS in compact form (a JWT): base64url of `{"…` then two more dot-separated parts. */
const JWS = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/dg;

function jwsHeader(token: string): Record<string, unknown> | undefined {
  try {
    const header = JSON.parse(Buffer.from(token.slice(0, token.indexOf(".")), "base64url").toString("utf8")) as unknown;
    return typeof header === "object" && header !== null ? (header as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Credentials this server issued or accepts: JWTs whose `kid` is one of its keys (the operator
 * trust anchors' and its own signing key's). Runs before `jwt`, which catches every other JWS,
 * so the manifest tells our own credentials apart.
 */
export function issuedCredentialDetector(keyIds: readonly string[]): Detector {
  const ours = new Set(keyIds);
  return {
    id: "issued-credential",
    category: "tokens",
    find(text) {
      return matchSpans(JWS, text).filter((span) => {
        const kid = jwsHeader(text.slice(span.start, span.end))?.kid;
        return typeof kid === "string" && ours.has(kid);
      });
    },
  };
}

export const jwtDetector = patternDetector("jwt", "tokens", JWS);

/** A PEM private key block (PKCS#1/#8, EC, OpenSSH, encrypted, PGP), to its END line or the end of the text. */
export const pemPrivateKeyDetector = patternDetector(
  "pem-private-key",
  "credentials",
  /-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|$)/g,
);

/** AWS access key ids (AKIA… long-term, ASIA… temporary, and the other documented prefixes). */
export const awsAccessKeyDetector = patternDetector(
  "aws-access-key",
  "credentials",
  /(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|AKPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}(?![A-Z0-9])/g,
);

/** GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained (github_pat_). */
export const githubTokenDetector = patternDetector(
  "github-token",
  "credentials",
  /(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,251}|github_pat_[A-Za-z0-9_]{22,255})/g,
);

/** Slack tokens (xoxb-, xoxp-, xoxa-, xoxo-, xoxs-, xoxr-, xoxe-) and incoming-webhook URLs. */
export const slackTokenDetector = patternDetector(
  "slack-token",
  "credentials",
  /xox[abeoprs]-[A-Za-z0-9-]{10,}|https:\/\/hooks\.slack\.com\/(?:services|workflows|triggers)\/[A-Za-z0-9_/-]+/g,
);

/** OpenAI-style secret keys (sk-…, sk-proj-…, sk-svcacct-…; also Anthropic's sk-ant-…). */
export const openAiKeyDetector = patternDetector("openai-key", "credentials", /(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}/g);

/** Google API keys (AIza…) and OAuth access tokens (ya29.…). */
export const googleApiKeyDetector = patternDetector("google-api-key", "credentials", /AIza[0-9A-Za-z_-]{35}|(?<![A-Za-z0-9])ya29\.[0-9A-Za-z_-]{20,}/g);

/** Stripe secret and restricted keys (sk_live_, sk_test_, rk_live_, rk_test_) and webhook secrets. */
export const stripeKeyDetector = patternDetector(
  "stripe-key",
  "credentials",
  /(?<![A-Za-z0-9])(?:[sr]k_(?:live|test)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z+/=]{24,})/g,
);

/** The credential of an Authorization header value: `Bearer …` or `Basic …`. */
export const bearerDetector = patternDetector("bearer-authorization", "tokens", /\b(?:Bearer|Basic)\s+(?!\[redacted)([A-Za-z0-9._~+/-]{16,}=*)/gi, 1);

/** The password of a URL's userinfo: `scheme://user:PASSWORD@host`. */
export const urlPasswordDetector = patternDetector(
  "url-password",
  "credentials",
  /\b[a-z][a-z0-9+.-]{1,20}:\/\/[^\s/:@"'<>]+:(?!\[redacted)([^\s/@"'<>]+)@/gi,
  1,
);

/**
 * The value of an assignment to a secret-named key: `password=…`, `DB_PASSWORD: …`,
 * `"client_secret": "…"`, `--api-key=…`. Only the value is replaced.
 */
export const secretAssignmentDetector = patternDetector(
  "secret-assignment",
  "credentials",
  /(?<![A-Za-z0-9])(?:passwd|password|passphrase|pwd|secret|client[_-]?secret|secret[_-]?key|api[_-]?key|apikey|access[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|session[_-]?token|token|private[_-]?key|aws_secret_access_key|aws_session_token)(?![A-Za-z0-9])(?:["']?\s*[:=]\s*["']?)(?!\[redacted)([^\s"'&;,<>]{3,})/gi,
  1,
);

/**
 * Text that reads like a prompt to a model: a system-prompt opening, an injection phrase, or
 * chat-template markers. The whole string it is in is the prompt, so a find covers all of it
 * (the final scan reports the phrase).
 */
const PROMPT_PHRASES =
  /\byou are (?:an?|the|my) [^"\n]{0,60}?\b(?:assistant|agent|model|ai|bot|expert)\b|\bignore (?:all |any )?(?:the )?(?:previous|prior|above) instructions\b|<\|im_start\|>|<\|im_end\|>|\[INST\]|<<SYS>>|\bsystem prompt:|"role"\s*:\s*"(?:system|user|assistant)"/dgi;

export const promptTextDetector: Detector = {
  id: "prompt-text",
  category: "sensitivePrompts",
  find(text: string, where: Where): Span[] {
    const found = matchSpans(PROMPT_PHRASES, text);
    if (found.length === 0) return found;
    // In a value, the whole value is the prompt; in raw text, the phrases are the finds.
    return where.kind === "value" ? [{ start: 0, end: text.length }] : found;
  },
};

/** The shape detectors, in the order the pipeline runs them (after issued-credential). */
export const shapeDetectors: readonly Detector[] = [
  pemPrivateKeyDetector,
  jwtDetector,
  awsAccessKeyDetector,
  githubTokenDetector,
  slackTokenDetector,
  openAiKeyDetector,
  googleApiKeyDetector,
  stripeKeyDetector,
  bearerDetector,
  urlPasswordDetector,
  secretAssignmentDetector,
  promptTextDetector,
];
