// SHA-256 of a message over a canonical JSON form (object keys sorted), so that two equal
// messages digest alike whatever the order of their map entries on the wire.
import { createHash } from "node:crypto";
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([key, entry]) => [key, canonical(entry)]),
  );
}

export function messageDigest<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): string {
  return createHash("sha256")
    .update(JSON.stringify(canonical(toJson(schema, message))))
    .digest("hex");
}
