// What a client may see of an operation: everything but the values of the environment it runs
// with (spec.env of execution_start and container_run), which can hold secrets. The store keeps
// them, since the executor needs them; the API never returns them — the keys stay, the values
// read "[redacted]".
import { clone } from "@bufbuild/protobuf";
import { OperationSchema, type Operation } from "../gen/agentmachine/v1/operation_pb.js";

export const REDACTED = "[redacted]";

export function withoutSecrets(operation: Operation): Operation {
  const spec = operation.spec?.kind;
  if ((spec?.case !== "executionStart" && spec?.case !== "containerRun") || Object.keys(spec.value.env).length === 0) return operation;
  const copy = clone(OperationSchema, operation);
  const env = (copy.spec!.kind.value as { env: Record<string, string> }).env;
  for (const key of Object.keys(env)) env[key] = REDACTED;
  return copy;
}
