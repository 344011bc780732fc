// The profiles a call concerns, so that its log lines can say so (field `profiles`) and a
// diagnostics bundle keeps them only for those profiles (src/diagnostics/log-profiles.ts).
// A call concerns the profiles it was allowed to see: governance/scope.ts's canSeeProfile, the
// check every access to a profile passes, notes each. The record lives in the call's async
// context (async-context.ts, shared with the tracer), so the check needs no handle on the call,
// and a streaming handler, which runs while its response is written, is covered as well as a
// unary one. Only the call's own lines take
// the field (interceptors.ts): work a call merely starts (a task it queues) outlives it and
// says what it concerns itself.
import { context, createContextKey } from "@opentelemetry/api";
import { keepAsyncContext } from "./async-context.js";

const callProfiles = createContextKey("agentmachine.call.profiles");

function currentCallProfiles(): Set<string> | undefined {
  return context.active().getValue(callProfiles) as Set<string> | undefined;
}

/** `handler` (a Node request handler), each request of which runs with a record of its own. */
export function withCallProfiles<Args extends unknown[]>(handler: (...args: Args) => void): (...args: Args) => void {
  keepAsyncContext();
  return (...args) => context.with(context.active().setValue(callProfiles, new Set<string>()), () => handler(...args));
}

/** Notes that the current call, if this runs in one, concerns `profile`. */
export function noteCallProfile(profile: string): void {
  currentCallProfiles()?.add(profile);
}

/** Log fields naming the profiles the current call concerns so far (none outside a call, or before it concerns one). */
export function callProfileFields(): { profiles?: string[] } {
  const profiles = currentCallProfiles();
  return profiles === undefined || profiles.size === 0 ? {} : { profiles: [...profiles].sort() };
}
