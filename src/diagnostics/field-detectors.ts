// Detectors that judge a value by the field it is in: a high-entropy string under a
// secret-sounding name, and the content of a prompt-sounding field. They see only whole values
// (never raw text), so in the final scan they run over each file's parsed JSON.
import { PLACEHOLDER, type Detector, type Span, type Where } from "./detector.js";

/** Field names that announce a secret: password, api_key, clientSecret, X-Auth-Token, session… */
const SECRET_FIELD =
  /pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key|credential|cookie|session|signature|salt|bearer|jwt|auth(?!or)/i;

/** Shannon entropy of `text`, in bits per character. */
export function entropyBits(text: string): number {
  const counts = new Map<string, number>();
  for (const char of text) counts.set(char, (counts.get(char) ?? 0) + 1);
  const length = [...text].length;
  let bits = 0;
  for (const count of counts.values()) {
    const p = count / length;
    bits -= p * Math.log2(p);
  }
  return bits;
}

/** At least this long and this random (random base64 has about 6 bits a character, English words under 3.5). */
export const ENTROPY_MIN_LENGTH = 12;
export const ENTROPY_MIN_BITS = 3.0;

/** A string of at least 12 characters with at least 3 bits per character, as the value of a secret-named field: all of it. */
export const secretFieldEntropyDetector: Detector = {
  id: "secret-field-entropy",
  category: "localSecrets",
  find(text: string, where: Where): Span[] {
    if (where.kind !== "value" || where.field === undefined || !SECRET_FIELD.test(where.field)) return [];
    for (const part of text.replace(PLACEHOLDER, " ").split(/\s+/)) {
      if (part.length >= ENTROPY_MIN_LENGTH && entropyBits(part) >= ENTROPY_MIN_BITS) return [{ start: 0, end: text.length }];
    }
    return [];
  },
};

/** Field names whose values are prompts or model conversations, compared without case or separators. */
const PROMPT_FIELDS = new Set([
  "messages",
  "instruction",
  "instructions",
  "completion",
  "completions",
  "content",
  "transcript",
  "conversation",
  "chathistory",
  "input",
  "query",
]);

function isPromptField(field: string): boolean {
  const name = field.toLowerCase().replace(/[^a-z0-9]/g, "");
  return PROMPT_FIELDS.has(name) || name.endsWith("prompt") || name.endsWith("prompts");
}

/** Any non-empty value of a prompt field (prompt, systemPrompt, messages, instructions, content…): all of it. */
export const promptFieldDetector: Detector = {
  id: "prompt-field",
  category: "sensitivePrompts",
  find(text: string, where: Where): Span[] {
    if (where.kind !== "value" || where.field === undefined || !isPromptField(where.field)) return [];
    return text.replace(PLACEHOLDER, "").trim() === "" ? [] : [{ start: 0, end: text.length }];
  },
};
