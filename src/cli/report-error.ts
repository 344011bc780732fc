// How a failed command ends: a server's answer as `amctl: <Code>: <message>` with each field
// violation on its own line, exit 1 for a refusal and 2 for an unreachable server; anything
// else (bad usage, an unreadable file) as `amctl: <message>`, exit 2.
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema, type FieldPath } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { EXIT_INVALID, EXIT_USAGE } from "./exit-codes.js";

/** `spec.execution_start.argv[0]`, `labels["k"]`. */
export function fieldPathText(path: FieldPath | undefined): string {
  return (path?.elements ?? [])
    .map(({ fieldName, subscript }) => {
      switch (subscript.case) {
        case undefined:
          return fieldName;
        case "stringKey":
          return `${fieldName}[${JSON.stringify(subscript.value)}]`;
        default:
          return `${fieldName}[${String(subscript.value)}]`;
      }
    })
    .join(".");
}

/** Codes that mean the server could not be reached (or is going away), not that it said no. */
const unreachable = new Set([Code.Unavailable]);

/** Prints the error on stderr and returns the exit code. */
export function reportError(error: unknown): number {
  if (!(error instanceof ConnectError)) {
    console.error(`amctl: ${(error as Error).message}`);
    return EXIT_USAGE;
  }
  console.error(`amctl: ${Code[error.code]}: ${error.rawMessage}`);
  for (const detail of error.findDetails(ViolationsSchema)) {
    for (const violation of detail.violations) console.error(`  ${fieldPathText(violation.field) || "(request)"}: ${violation.message}`);
  }
  return unreachable.has(error.code) ? EXIT_USAGE : EXIT_INVALID;
}
