// Whether a stored event matches a WatchEvents filter. Every set field must match; repeated
// fields match any of their elements.
import type { EventFilter } from "../gen/agentmachine/v1/operation_service_pb.js";
import type { StoredEvent } from "../store/store.js";

export function matchesEventFilter(filter: EventFilter | undefined, stored: StoredEvent): boolean {
  if (filter === undefined) return true;
  const { event } = stored;
  if (filter.types.length > 0 && !filter.types.includes(event.type)) return false;
  if (filter.states.length > 0 && !filter.states.includes(event.state)) return false;
  if (filter.profile !== "" && filter.profile !== stored.profile) return false;
  if (filter.operations.length > 0 && !filter.operations.includes(event.operation)) return false;
  if (filter.operationTypes.length > 0 && !filter.operationTypes.includes(stored.operationType)) return false;
  for (const [key, value] of Object.entries(filter.labels)) {
    if (stored.labels[key] !== value) return false;
  }
  return true;
}
