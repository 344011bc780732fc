// Invalid UTF-8 in a string field of a binary request is InvalidArgument with a buf.validate
// violation naming the field, like any other invalid field, in every RPC and at any depth.
//
// protobuf-es refuses such a string while it parses the request (a fatal TextDecoder), and
// connect-es reports every parse failure as Internal ("parse binary: …") before any interceptor
// sees the call, so nothing could name the field. protobuf-es offers no per-parse hook, only the
// process-wide text encoding: the server installs one that decodes such a string instead of
// throwing, and marks it by turning each U+FFFD of the lenient decoding into a lone surrogate,
// which the decoding of valid UTF-8 never yields. The validator then walks the request and
// refuses every ill-formed string by its path before any rule or handler reads it. (A JSON
// request cannot carry one: protobuf-es already refuses a lone surrogate there.)
import { buildPath, reflect, type PathBuilder, type ReflectMap, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { ValidationError, Violation, type Validator } from "@bufbuild/protovalidate";

/** What a replaced sequence becomes: a lone low surrogate. */
const MARK = "\uDCFD";
/** A lone surrogate (in a u-mode pattern, a pair is one code point, not two surrogates). */
const LONE_SURROGATE = /\p{Cs}/u;
const LONE_SURROGATES = /\p{Cs}/gu;
const RULE_ID = "valid_utf8";
const MESSAGE = "must be valid UTF-8";

let installed = false;

/** Makes every later binary parse in this process mark invalid UTF-8 in strings instead of throwing. */
export function markInvalidUtf8(): void {
  if (installed) return;
  installed = true;
  const encoding = getTextEncoding();
  configureTextEncoding({
    ...encoding,
    decodeUtf8(bytes, strict) {
      if (!strict) return encoding.decodeUtf8(bytes, false);
      try {
        return encoding.decodeUtf8(bytes, true);
      } catch {
        return encoding.decodeUtf8(bytes, false).replaceAll("\uFFFD", MARK);
      }
    },
  });
}

function illFormed(value: unknown): boolean {
  return typeof value === "string" && LONE_SURROGATE.test(value);
}

/** Adds a violation for each ill-formed string in `message` (at `path`) to `out`. */
function collect(message: ReflectMessage, path: PathBuilder, out: Violation[]): void {
  const refuse = (at: PathBuilder, forKey = false): void => void out.push(new Violation(MESSAGE, RULE_ID, at.toPath(), [], forKey));
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    const at = path.clone().field(field);
    switch (field.fieldKind) {
      case "scalar":
        if (illFormed(message.get(field))) refuse(at);
        break;
      case "message":
        collect(message.get(field), at, out);
        break;
      case "list": {
        let index = 0;
        for (const item of message.get(field)) {
          if (field.listKind === "message") collect(item as ReflectMessage, at.clone().list(index), out);
          else if (illFormed(item)) refuse(at.clone().list(index));
          index += 1;
        }
        break;
      }
      case "map":
        for (const [key, value] of message.get(field) as ReflectMap<string | number | bigint | boolean>) {
          // A path shows a key as the lenient decoding read it: each mark as U+FFFD.
          const entry = at.clone().map(typeof key === "string" ? key.replace(LONE_SURROGATES, "\uFFFD") : key);
          if (illFormed(key)) refuse(entry, true);
          if (field.mapKind === "message") collect(value as ReflectMessage, entry, out);
          else if (illFormed(value)) refuse(entry);
        }
        break;
    }
  }
}

/** `validator`, after a check that refuses every ill-formed string by its path. */
export function refusingInvalidUtf8(validator: Validator): Validator {
  return {
    validate(schema, message) {
      const violations: Violation[] = [];
      collect(reflect(schema, message), buildPath(schema), violations);
      if (violations.length === 0) return validator.validate(schema, message);
      return { kind: "invalid", message, error: new ValidationError(violations), violations };
    },
  };
}
