// How a failed command ends: a server's answer as `amctl: <Code>: <message>` with each field
// violation on its own line, exit 1 for a refusal and 2 for an unreachable server; anything
// else (bad usage, an unreadable file) as `amctl: <message>`, exit 2.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { EXIT_INVALID, EXIT_USAGE } from "./exit-codes.js";

/** Codes that mean the server could not be reached (or is going away), not that it said no. */
const unreachable = new Set([Code.Unavailable]);

/** Prints the error on stderr and returns the exit code. */
export function reportError(error: unknown): number {
  if (!(error instanceof ConnectError)) {
    console.error(`amctl: ${(error as Error).message}`);
    return EXIT_USAGE;
  }
  console.error(`amctl: ${Code[error.code]}: ${error.rawMessage}`);
  for (const detail of error.findDetails(BadRequestSchema)) {
    for (const violation of detail.fieldViolations) console.error(`  ${violation.field || "(request)"}: ${violation.description}`);
  }
  return unreachable.has(error.code) ? EXIT_USAGE : EXIT_INVALID;
}
