// Which of the server's recent log lines a bundle may carry: those of its own profile and those
// that concern no profile at all. A line concerns the profiles its call was allowed to see (the
// `profiles` field, src/api/call-profiles.ts) and the profile of the operation it names (the
// `operation` field, as the runner's lines name their task), looked up in the store. Exact
// fields, not a search of the text. A line that is not JSON concerns none here; the projection
// (project-logs.ts) redacts it whole.
import type { StoreOperations } from "../store/store.js";

function fieldsOf(line: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(line);
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The lines of `lines` that concern `profile` only, or no profile. */
export async function linesOfProfile(store: StoreOperations, profile: string, lines: readonly string[]): Promise<string[]> {
  const operationProfiles = new Map<string, string | undefined>();
  const profileOfOperation = async (name: string): Promise<string | undefined> => {
    if (!operationProfiles.has(name)) operationProfiles.set(name, (await store.getOperation(name))?.profile);
    return operationProfiles.get(name);
  };
  const kept: string[] = [];
  for (const line of lines) {
    const { profiles, operation } = fieldsOf(line);
    const concerns = Array.isArray(profiles) ? [...profiles] : [];
    if (typeof operation === "string") concerns.push(await profileOfOperation(operation));
    if (concerns.every((item) => item === undefined || item === profile)) kept.push(line);
  }
  return kept;
}
