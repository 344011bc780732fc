// Checks of what a WatchEvents subscriber received against the store's own record of events:
// the invariants etcd's robustness suite checks of every watcher (ordered, unique, no gaps,
// never split, resumable, bookmarks monotonic, filters exact). Each check returns violations
// as readable strings instead of throwing, so one failure reports everything it broke.
import { equals } from "@bufbuild/protobuf";
import { OperationEventSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { transitionEvent } from "../../src/model/transitions.js";
import type { OperationStore, StoredEvent } from "../../src/store/store.js";
import type { EventFilterInit, EventWatcher } from "./event-watcher.js";

/** Every event the store holds, by sequence: the truth watchers are checked against. */
export async function storeTruth(store: OperationStore): Promise<Map<bigint, StoredEvent>> {
  const truth = new Map<bigint, StoredEvent>();
  let after = 0n;
  for (;;) {
    const page = await store.readEvents(after, 1000);
    if (page.length === 0) return truth;
    for (const stored of page) truth.set(stored.event.sequence, stored);
    after = page[page.length - 1]!.event.sequence;
  }
}

/** A short, stable description of an event, for messages. */
export function describeEvent(event: OperationEvent): string {
  return `#${event.sequence} ${event.operation} ${EventType[event.type]}→${TaskState[event.state]} attempt ${event.attempt}`;
}

/**
 * Whether a stored event matches a WatchEvents filter. Written independently of the server's
 * event-filter.ts, from the contract (operation_service.proto, EventFilter): every set field
 * must match; repeated fields match any element.
 */
export function filterMatches(filter: EventFilterInit | undefined, stored: StoredEvent): boolean {
  if (filter === undefined) return true;
  const { event } = stored;
  if (filter.types?.length && !filter.types.includes(event.type)) return false;
  if (filter.states?.length && !filter.states.includes(event.state)) return false;
  if (filter.profile && filter.profile !== stored.profile) return false;
  if (filter.operations?.length && !filter.operations.includes(event.operation)) return false;
  if (filter.operationTypes?.length && !filter.operationTypes.includes(stored.operationType)) return false;
  for (const [key, value] of Object.entries(filter.labels ?? {})) if (stored.labels[key] !== value) return false;
  return true;
}

/** What each sequence looked like to the first watcher that received it (cross-watcher check). */
export type SeenBy = Map<bigint, { watcher: string; event: OperationEvent }>;

/**
 * Every invariant of one watcher, given every event in the store (`truth`, by sequence) and
 * the latest sequence the watcher must have considered.
 */
export function watcherViolations(
  watcher: EventWatcher,
  truth: ReadonlyMap<bigint, StoredEvent>,
  latest: bigint,
  seenBy: SeenBy,
  /** An unfiltered watcher from 0 whose list this watcher's must be the filtered share of. */
  reference?: EventWatcher,
): string[] {
  const violations: string[] = [];
  const say = (text: string): void => {
    if (violations.length < 20) violations.push(`${watcher.name}: ${text}`);
  };
  const unfiltered = watcher.filter === undefined;

  for (const error of watcher.errors()) say(`a connection ended with ${error.message} (code ${error.code})`);

  let lastEvent: bigint | undefined;
  let lastBookmark: bigint | undefined;
  const firstOfSegment = new Map<number, bigint>();
  for (const item of watcher.received) {
    if (item.kind === "bookmark") {
      if (lastBookmark !== undefined && item.sequence < lastBookmark) say(`bookmark ${item.sequence} went backwards (previous bookmark ${lastBookmark})`);
      if (lastEvent !== undefined && item.sequence < lastEvent) say(`bookmark ${item.sequence} is behind the event #${lastEvent} sent before it`);
      if (item.sequence > latest) say(`bookmark ${item.sequence} is beyond the latest sequence ${latest}`);
      if (item.sequence < watcher.segments[item.segment]!.after)
        say(`bookmark ${item.sequence} is before its connection's cursor ${watcher.segments[item.segment]!.after}`);
      lastBookmark = item.sequence;
      continue;
    }
    const { event } = item;
    const sequence = event.sequence;
    if (!firstOfSegment.has(item.segment)) firstOfSegment.set(item.segment, sequence);
    if (lastEvent !== undefined && sequence <= lastEvent) say(`event #${sequence} after #${lastEvent}: not strictly increasing (duplicate or out of order)`);
    if (lastBookmark !== undefined && sequence <= lastBookmark)
      say(`event #${sequence} arrived after bookmark ${lastBookmark}, which claimed everything up to it was considered`);
    if (sequence <= watcher.segments[item.segment]!.after)
      say(`event #${sequence} is not after its connection's cursor ${watcher.segments[item.segment]!.after}`);
    lastEvent = sequence;

    const stored = truth.get(sequence);
    if (stored === undefined) {
      say(`event ${describeEvent(event)} is not in the store`);
    } else {
      if (!equals(OperationEventSchema, event, stored.event)) say(`event ${describeEvent(event)} differs from the stored ${describeEvent(stored.event)}`);
      if (!filterMatches(watcher.filter, stored)) say(`event ${describeEvent(event)} does not match the filter`);
    }
    const other = seenBy.get(sequence);
    if (other === undefined) seenBy.set(sequence, { watcher: watcher.name, event });
    else if (!equals(OperationEventSchema, event, other.event))
      say(`split: ${describeEvent(event)} but ${other.watcher} received ${describeEvent(other.event)}`);
  }

  // Resumable: a resumed unfiltered stream starts exactly after its cursor.
  if (unfiltered) {
    for (const [segment, first] of firstOfSegment) {
      const after = watcher.segments[segment]!.after;
      if (first !== after + 1n) say(`connection ${segment} from ${after} began with #${first}, not #${after + 1n}`);
    }
  }

  // Exactly the matching events after the first cursor: nothing missing, nothing extra.
  const expected: bigint[] = [];
  for (const [sequence, stored] of truth) {
    if (sequence > watcher.start && sequence <= latest && filterMatches(watcher.filter, stored)) expected.push(sequence);
  }
  expected.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const got = watcher.events.map((event) => event.sequence);
  const gotSet = new Set(got);
  const expectedSet = new Set(expected);
  const missing = expected.filter((sequence) => !gotSet.has(sequence));
  const extra = got.filter((sequence) => !expectedSet.has(sequence));
  if (missing.length > 0)
    say(`missing ${missing.length} event(s) after ${watcher.start}: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", …" : ""}`);
  if (extra.length > 0) say(`${extra.length} unexpected event(s): ${extra.slice(0, 10).join(", ")}`);
  if (got.length !== expected.length && missing.length === 0 && extra.length === 0)
    say(`received ${got.length} events for ${expected.length} expected: duplicates`);
  if (reference !== undefined && reference !== watcher) {
    const share = reference.events
      .filter((event) => event.sequence > watcher.start && event.sequence <= latest)
      .filter((event) => {
        const stored = truth.get(event.sequence);
        return stored !== undefined && filterMatches(watcher.filter, stored);
      })
      .map((event) => event.sequence);
    if (share.join() !== got.join()) {
      const index = share.findIndex((sequence, i) => got[i] !== sequence);
      say(
        `differs from its share of ${reference.name}'s list at position ${index === -1 ? share.length : index}: expected #${share[index === -1 ? share.length : index]}, got #${got[index === -1 ? share.length : index]}`,
      );
    }
  }
  if (unfiltered) {
    for (let index = 1; index < got.length; index += 1) {
      if (got[index]! !== got[index - 1]! + 1n) {
        say(`gap or repeat: #${got[index - 1]} then #${got[index]}`);
        break;
      }
    }
  }
  return violations;
}

/** Contiguity of the store's own record: sequences are `oldest..latest` with nothing missing. */
export function contiguityViolations(sequences: readonly bigint[], from: bigint): string[] {
  const violations: string[] = [];
  let expected = from;
  for (const sequence of sequences) {
    if (sequence !== expected) {
      violations.push(`store: expected #${expected}, found #${sequence}`);
      if (violations.length >= 10) break;
      expected = sequence;
    }
    expected += 1n;
  }
  return violations;
}

/**
 * Every operation's events tell a legal story (queued → … per the transition table; progress
 * only while running), and the stored operation agrees with its last event: same state, and
 * `last_sequence` is that event's sequence. Operations without events must still be queued.
 */
export function lifecycleViolations(events: readonly OperationEvent[], operations: ReadonlyMap<string, Operation>): string[] {
  const violations: string[] = [];
  const say = (text: string): void => {
    if (violations.length < 20) violations.push(text);
  };
  const current = new Map<string, { state: TaskState; last: bigint }>();
  for (const event of events) {
    const from = current.get(event.operation)?.state ?? TaskState.QUEUED;
    if (!operations.has(event.operation)) say(`event ${describeEvent(event)} belongs to no stored operation`);
    if (event.type === EventType.PROGRESS) {
      if (from !== TaskState.RUNNING || event.state !== TaskState.RUNNING) say(`progress ${describeEvent(event)} while ${TaskState[from]}`);
    } else if (transitionEvent(from, event.state) !== event.type) {
      say(`illegal transition ${TaskState[from]} → ${describeEvent(event)}`);
    }
    current.set(event.operation, { state: event.state, last: event.sequence });
  }
  for (const [name, operation] of operations) {
    const seen = current.get(name);
    if (seen === undefined) {
      if (operation.state !== TaskState.QUEUED) say(`${name} is ${TaskState[operation.state]} but has no event`);
      continue;
    }
    if (operation.state !== seen.state) say(`${name} is stored ${TaskState[operation.state]} but its last event says ${TaskState[seen.state]}`);
    if (operation.lastSequence !== seen.last) say(`${name} has last_sequence ${operation.lastSequence} but its last event is #${seen.last}`);
  }
  return violations;
}
