// Whether a stored event matches a WatchEvents filter. Every set field must match; repeated
// fields match any of their elements. And the part of it a replay's store query selects by.
import type { EventFilter } from "../gen/agentmachine/v1/operation_service_pb.js";
import type { EventSelection, StoredEvent } from "../store/store.js";

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

/**
 * What the store selects in its query for `filter` seen by a caller who may see `visibleProfiles`
 * (undefined: every profile): every event that matches, and perhaps more (labels are matched only
 * by matchesEventFilter, on every event before it is sent).
 */
export function eventSelection(filter: EventFilter | undefined, visibleProfiles: readonly string[] | undefined): EventSelection {
  const selection: EventSelection = {};
  const profile = filter?.profile ?? "";
  if (profile !== "") selection.profiles = visibleProfiles === undefined || visibleProfiles.includes(profile) ? [profile] : [];
  else if (visibleProfiles !== undefined) selection.profiles = visibleProfiles;
  if (filter === undefined) return selection;
  if (filter.operations.length > 0) selection.operations = filter.operations;
  if (filter.operationTypes.length > 0) selection.operationTypes = filter.operationTypes;
  if (filter.types.length > 0) selection.types = filter.types;
  if (filter.states.length > 0) selection.states = filter.states;
  return selection;
}
