// Stop reasons (agentmachine.v1.StopReason) as logs, metrics, the CLI and versions before 0.x
// spell them: `runner_lost`, the value's name in lowercase.
import { StopReason } from "../gen/agentmachine/v1/operation_pb.js";

/** `runner_lost`; empty for UNSPECIFIED. */
export function stopReasonName(reason: StopReason): string {
  return reason === StopReason.UNSPECIFIED ? "" : (StopReason[reason] ?? String(reason)).toLowerCase();
}

/** The reason spelled `name` (as versions before 0.x stored it); UNSPECIFIED for a name no value has. */
export function stopReasonOf(name: string): StopReason {
  const value = (StopReason as unknown as Record<string, StopReason | undefined>)[name.toUpperCase()];
  return typeof value === "number" ? value : StopReason.UNSPECIFIED;
}
