// The request digest of an audit record: SHA-256 (lowercase hex) of the request's protobuf
// binary encoding, after blanking every value that may be a secret, so that the log proves what
// was asked without holding, or letting anyone confirm a guess of, a secret. Blanked: the values
// of `env` maps (ExecutionStartSpec.env, ContainerRunSpec.env; the keys stay) and every string
// field named like a credential (ReportUsageRequest.call_ticket, tokens, secrets, passwords,
// keys), at any depth.
import { createHash } from "node:crypto";
import { ScalarType, clone, toBinary, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

const SECRET_FIELD = /(?:^|_)(?:token|ticket|secret|password|credential|key)s?(?:$|_)/;
const SECRET_MAP = /(?:^|_)env$/;

type Fields = Record<string, unknown>;

function isSecretString(field: DescField): boolean {
  return field.fieldKind === "scalar" && (field.scalar === ScalarType.STRING || field.scalar === ScalarType.BYTES) && SECRET_FIELD.test(field.name);
}

function blank(field: DescField): string | Uint8Array {
  return field.fieldKind === "scalar" && field.scalar === ScalarType.BYTES ? new Uint8Array() : "";
}

/** Blanks the secrets of `message` in place (it is a clone). */
function blankSecrets(desc: DescMessage, message: Fields): void {
  for (const field of desc.fields) {
    // A oneof member lives in `{ case, value }` under the oneof's name.
    const holder = field.oneof ? (message[field.oneof.localName] as Fields) : message;
    const key = field.oneof ? "value" : field.localName;
    if (field.oneof && holder.case !== field.localName) continue;
    const value = holder[key];
    if (isSecretString(field)) {
      holder[key] = blank(field);
    } else if (field.fieldKind === "message" && value !== undefined) {
      blankSecrets(field.message, value as Fields);
    } else if (field.fieldKind === "list" && field.listKind === "message") {
      for (const item of value as Fields[]) blankSecrets(field.message, item);
    } else if (field.fieldKind === "map") {
      const entries = value as Fields;
      for (const entryKey of Object.keys(entries)) {
        if (field.mapKind === "message") blankSecrets(field.message, entries[entryKey] as Fields);
        else if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING && SECRET_MAP.test(field.name)) entries[entryKey] = "";
      }
    }
  }
}

export function redactedRequestDigest<Desc extends DescMessage>(desc: Desc, request: MessageShape<Desc>): string {
  const copy = clone(desc, request);
  blankSecrets(desc, copy as unknown as Fields);
  return createHash("sha256").update(toBinary(desc, copy)).digest("hex");
}
