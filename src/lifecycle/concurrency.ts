// agentConcurrency: how many executions may run at once under each delegation of a chain (its
// whole subtree counts) and in each profile that has a budget. An execution that would exceed
// a cap is not rejected: it waits in `queued` and starts, in arrival order, when a slot frees.
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { SlotKey, StoreAccounts, StoreDelegations } from "../store/store.js";

/** The caps an execution runs under: every delegation from its own up to the root, and its profile's if it has one. */
export async function slotKeysOf(store: StoreDelegations & StoreAccounts, operation: Pick<Operation, "delegation" | "profile">): Promise<SlotKey[]> {
  const keys: SlotKey[] = [];
  for (let name = operation.delegation; name !== ""; ) {
    const delegation = await store.getDelegation(name);
    if (delegation === undefined) break;
    keys.push({ key: delegation.name, cap: delegation.scope?.budget?.agentConcurrency ?? 0n });
    name = delegation.parent;
  }
  const profile = await store.getProfile(operation.profile);
  if (profile?.budget !== undefined) keys.push({ key: profile.name, cap: profile.budget.agentConcurrency });
  return keys;
}

/** Running executions per key. */
export class ConcurrencySlots {
  private readonly running = new Map<string, bigint>();

  fits(keys: readonly SlotKey[]): boolean {
    return keys.every(({ key, cap }) => (this.running.get(key) ?? 0n) < cap);
  }

  take(keys: readonly SlotKey[]): void {
    for (const { key } of keys) this.running.set(key, (this.running.get(key) ?? 0n) + 1n);
  }

  release(keys: readonly SlotKey[]): void {
    for (const { key } of keys) {
      const left = (this.running.get(key) ?? 1n) - 1n;
      if (left > 0n) this.running.set(key, left);
      else this.running.delete(key);
    }
  }
}
