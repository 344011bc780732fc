// Runs agent_machine.execution.cancel. Stopping another task is the lifecycle's own job, so the
// command goes straight to the cancellation (task-cancellation.ts) rather than through an
// executor the server wires back to the runner. It completes once the cancel is requested; the
// target turns cancelled when it has stopped.
import type { Attempt, Executor, Outcome } from "../executors/executor.js";
import type { TaskCancellation } from "./task-cancellation.js";

export class CancelCommand implements Executor {
  constructor(private readonly cancellation: Pick<TaskCancellation, "cancel">) {}

  async run({ operation }: Attempt): Promise<Outcome> {
    const spec = operation.spec?.kind;
    if (spec?.case !== "executionCancel") throw new Error(`CancelCommand cannot run ${spec?.case ?? "an empty spec"}`);
    await this.cancellation.cancel(spec.value.target, spec.value.reason || `cancelled by ${operation.name}`);
    return { kind: "completed", message: `cancel of ${spec.value.target} requested` };
  }
}
