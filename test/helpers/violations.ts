// Field violations (protovalidate's detail on an InvalidArgument) as tests compare them.
import type { Violation } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/** A violation's field as protovalidate writes it in the message, e.g. `spec.execution_start.env["X"]`. */
export function fieldPath(violation: Violation | undefined): string {
  return (violation?.field?.elements ?? [])
    .map((e, i) => {
      const name = `${i === 0 ? "" : "."}${e.fieldName}`;
      switch (e.subscript.case) {
        case "index":
          return `${name}[${e.subscript.value}]`;
        case "stringKey":
          return `${name}["${e.subscript.value}"]`;
        default:
          return name;
      }
    })
    .join("");
}
