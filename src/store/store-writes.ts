// The store's writes, for decorators that observe them (spans of store commits, say) without
// touching either backend: each write passes through `around`, everything else is the store's
// own.
import type { OperationStore } from "./store.js";

/** Every method of the store that writes. */
export const storeWrites = [
  "heartbeat",
  "createOperation",
  "updateOperation",
  "modifyOperation",
  "claimOperation",
  "compactEvents",
  "appendOutput",
  "compactOutput",
  "getOrCreateSecret",
  "putDelegation",
  "putChildDelegation",
  "revokeDelegationSubtree",
  "putPolicyBundle",
  "putMcpUpstream",
  "deleteMcpUpstream",
  "appendAudit",
  "putAuditCheckpoint",
  "pruneAuditLog",
] as const satisfies readonly (keyof OperationStore)[];

export type StoreWrite = (typeof storeWrites)[number];

type Write = (...args: unknown[]) => Promise<unknown>;

/** Runs one write of `method`: `write(...args)` is the store's own, whose answer `around` passes on. */
export type AroundWrite = (method: StoreWrite, args: unknown[], write: Write) => Promise<unknown>;

/**
 * `store` with every write passed through `around`. Methods are bound to the store itself, so
 * its own calls among its methods are never seen twice.
 */
export function aroundWrites<S extends OperationStore>(store: S, around: AroundWrite): S {
  const methods = new Map<PropertyKey, unknown>();
  const writes = new Set<PropertyKey>(storeWrites);
  const wrap =
    (method: StoreWrite, write: Write) =>
    (...args: unknown[]) =>
      around(method, args, write);
  for (const method of storeWrites) methods.set(method, wrap(method, (store[method] as Write).bind(store)));
  return new Proxy(store, {
    // A write replaced later (a test's injected fault) is passed through `around` too.
    set(target, key, value: unknown) {
      if (writes.has(key) && typeof value === "function") methods.set(key, wrap(key as StoreWrite, (value as Write).bind(target)));
      else methods.delete(key);
      return Reflect.set(target, key, value);
    },
    get(target, key) {
      const value: unknown = Reflect.get(target, key);
      if (typeof value !== "function") return value;
      let method = methods.get(key);
      if (method === undefined) methods.set(key, (method = value.bind(target)));
      return method;
    },
  });
}
