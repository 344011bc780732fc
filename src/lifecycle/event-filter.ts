// Whether a stored event matches a WatchEvents filter. Every set field must match; repeated
// fields match any of their elements. The part of it a replay's store query selects by. And the
// one index key set the EventHub files a live subscriber under (event-hub.ts), so that an event is
// tested only against the subscribers that could want it instead of against every filter.
import type { EventFilter } from "../gen/agentmachine/v1/operation_service_pb.js";
import type { EventSelection, StoredEvent } from "../store/store.js";

/**
 * The event fields the hub indexes subscribers by. A subscriber is filed under one of them with
 * the values it accepts: an event can match only if its own value is among them.
 */
export type IndexDimension = "operation" | "profile" | "operationType" | "type";

export interface IndexKeys {
  by: IndexDimension;
  values: readonly (string | number)[];
}

/** A live subscriber's filter as the hub uses it: where it is filed, and the exact rule. */
export interface CompiledFilter {
  /** Undefined: the subscriber may want any event (it is tested against each). */
  index: IndexKeys | undefined;
  matches: (stored: StoredEvent) => boolean;
  /**
   * Equal for filters that match exactly the same events (then the hub tests an event once for
   * all their subscribers and hands them one list); undefined: shared with none.
   */
  key?: string;
}

/** The value of `dimension` in a stored event. */
export function indexValue(stored: StoredEvent, dimension: IndexDimension): string | number {
  switch (dimension) {
    case "operation":
      return stored.event.operation;
    case "profile":
      return stored.profile;
    case "operationType":
      return stored.operationType;
    case "type":
      return stored.event.type;
  }
}

/**
 * Whether `stored` matches `filter`. It reads the event (which a replay's page decodes only when
 * asked: RowEvent) and the labels only for the fields the filter sets.
 */
export function matchesEventFilter(filter: EventFilter | undefined, stored: StoredEvent): boolean {
  if (filter === undefined) return true;
  if (filter.types.length > 0 && !filter.types.includes(stored.event.type)) return false;
  if (filter.states.length > 0 && !filter.states.includes(stored.event.state)) return false;
  if (filter.profile !== "" && filter.profile !== stored.profile) return false;
  if (filter.operations.length > 0 && !filter.operations.includes(stored.event.operation)) return false;
  if (filter.operationTypes.length > 0 && !filter.operationTypes.includes(stored.operationType)) return false;
  for (const [key, value] of Object.entries(filter.labels)) {
    if (stored.labels[key] !== value) return false;
  }
  return true;
}

/**
 * The index key the EventHub files a WatchEvents subscriber under, taken from the same reading of
 * its filter as the store query's (eventSelection): its operations, else the profiles it may see
 * (the filter's profile, else the caller's scope when that is a list — an empty list files the
 * subscriber under nothing, so no live event ever wakes it), else its operation types, else its
 * event types; undefined when it has none of these.
 */
export function eventFilterIndex(filter: EventFilter | undefined, visibleProfiles: readonly string[] | undefined): IndexKeys | undefined {
  const { operations, profiles, operationTypes, types } = eventSelection(filter, visibleProfiles);
  if (operations !== undefined) return { by: "operation", values: operations };
  if (profiles !== undefined) return { by: "profile", values: profiles };
  if (operationTypes !== undefined) return { by: "operationType", values: operationTypes };
  if (types !== undefined) return { by: "type", values: types };
  return undefined;
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
