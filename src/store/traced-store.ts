// A span for each store write (`store.createOperation`, `store.modifyOperation`…), from the
// call to its durable answer (for the embedded store, its group commit included), as a child
// of the active span. A write made outside any traced work — the runner's heartbeat, event
// compaction, audit checkpoints — gets none, so background writes do not each start a trace.
import { ATTR_DB_SYSTEM_NAME } from "@opentelemetry/semantic-conventions";
import type { OperationStore } from "./store.js";
import { aroundWrites } from "./store-writes.js";
import { inChildSpan } from "../telemetry/tracer.js";

/** `db.system.name` of each backend. */
export type StoreSystem = "sqlite" | "postgresql";

export function tracedStore<S extends OperationStore>(store: S, system: StoreSystem): S {
  const attributes = { [ATTR_DB_SYSTEM_NAME]: system };
  return aroundWrites(store, (method, args, write) => inChildSpan(`store.${method}`, attributes, () => write(...args)));
}
