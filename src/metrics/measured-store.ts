// The store as this server's metrics see it: how long each write takes, from the call to its
// durable answer (for the embedded store, waiting for its group commit included), and what this
// server's writes committed — operations created, events appended, budgets settled. These are
// counted from each write's answer, not from onCommit, because on a shared store onCommit passes
// on every replica's events: each server counts its own commits, so a sum over replicas is right.
import type {
  ClaimResult,
  CreateResult,
  Modification,
  ModifyResult,
  OperationStore,
  OperationUpdate,
  Settlement,
  StoredEvent,
  UpdateResult,
} from "../store/store.js";
import { aroundWrites, type StoreWrite } from "../store/store-writes.js";
import type { PlaneMetrics } from "./plane-metrics.js";

/**
 * `modify`, noting the settlement of the change it made last (a store may run a modification
 * more than once, when it retries a transaction: only the last run commits).
 */
function noting(modify: Modification, note: (settle: Settlement | undefined) => void): Modification {
  return (current) => {
    const change = modify(current);
    note(change?.settle);
    return change;
  };
}

/** A change to an operation committed: its event, and its settlement if it ended. */
function changed(metrics: PlaneMetrics, event: StoredEvent | undefined, settle: Settlement | undefined): void {
  if (event !== undefined) metrics.eventAppended(event);
  if (settle !== undefined) metrics.budgetSettled(settle.spent);
}

/** Runs one write, telling `metrics` what it committed. */
async function observed(metrics: PlaneMetrics, method: StoreWrite, args: unknown[], write: (...args: unknown[]) => Promise<unknown>): Promise<unknown> {
  switch (method) {
    case "createOperation": {
      const result = (await write(...args)) as CreateResult;
      if (result.kind === "created") metrics.operationCreated(result.operation, result.event);
      return result;
    }
    case "updateOperation": {
      const result = (await write(...args)) as UpdateResult;
      if (result.kind === "updated") changed(metrics, result.event, (args[0] as OperationUpdate).settle);
      return result;
    }
    case "modifyOperation":
    case "claimOperation": {
      // The modification is modifyOperation's second argument and claimOperation's third.
      const at = method === "modifyOperation" ? 1 : 2;
      let settle: Settlement | undefined;
      const noted = args.map((arg, index) => (index === at ? noting(arg as Modification, (last) => (settle = last)) : arg));
      const result = (await write(...noted)) as ModifyResult | ClaimResult;
      if (result.kind === "modified") changed(metrics, result.event, settle);
      return result;
    }
    default:
      return write(...args);
  }
}

/** `store` with its writes timed and observed; everything else is the store's own. */
export function measuredStore<S extends OperationStore>(store: S, metrics: PlaneMetrics): S {
  return aroundWrites(store, (method, args, write) => {
    const done = metrics.storeWrite(method);
    return observed(metrics, method, args, write).finally(done);
  });
}
