// The process's one async context: OpenTelemetry's Context, kept across awaits, timers and
// callbacks by OpenTelemetry's AsyncLocalStorage context manager. The call's own records
// (call-profiles.ts) and the tracer's active span are both values in it. One store, not one per
// use, because on Node 20 every AsyncLocalStorage in use adds work to every promise the process
// creates (each instance copies its store onto each new promise): a second one cost a traced
// server about half a percent of its CPU.
import { ROOT_CONTEXT, context, createContextKey } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";

const probe = createContextKey("agentmachine.async-context.probe");

/** Whether a context manager that carries values is registered (the API alone keeps none). */
function contextIsKept(): boolean {
  return context.with(ROOT_CONTEXT.setValue(probe, true), () => context.active().getValue(probe) === true);
}

/**
 * Makes sure the async context is kept: registers the context manager unless one is already (a
 * second registration would be refused, and logged as an error by OpenTelemetry). Idempotent.
 */
export function keepAsyncContext(): void {
  if (!contextIsKept()) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}
