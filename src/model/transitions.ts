// The task state machine: the one table of legal transitions and the event type each one
// records. queued → running → completed; running → retrying → running; running → failed;
// any non-terminal → cancelled; terminal states never change.
import { EventType, TaskState } from "../gen/agentmachine/v1/types_pb.js";

const { QUEUED, RUNNING, RETRYING, CANCELLED, FAILED, COMPLETED } = TaskState;

const transitions: ReadonlyMap<TaskState, ReadonlyMap<TaskState, EventType>> = new Map([
  [
    QUEUED,
    new Map([
      [RUNNING, EventType.START],
      [CANCELLED, EventType.CANCEL],
    ]),
  ],
  [
    RUNNING,
    new Map([
      [COMPLETED, EventType.COMPLETE],
      [RETRYING, EventType.RETRY],
      [FAILED, EventType.FAILURE],
      [CANCELLED, EventType.CANCEL],
    ]),
  ],
  [
    RETRYING,
    new Map([
      [RUNNING, EventType.START],
      [CANCELLED, EventType.CANCEL],
    ]),
  ],
  [CANCELLED, new Map()],
  [FAILED, new Map()],
  [COMPLETED, new Map()],
]);

export function isTerminal(state: TaskState): boolean {
  return state === CANCELLED || state === FAILED || state === COMPLETED;
}

/** The event type recording `from → to`, or undefined when the transition is illegal. */
export function transitionEvent(from: TaskState, to: TaskState): EventType | undefined {
  return transitions.get(from)?.get(to);
}

/** Every legal transition, for tests and documentation. */
export function legalTransitions(): [TaskState, TaskState, EventType][] {
  return [...transitions].flatMap(([from, targets]) => [...targets].map(([to, event]) => [from, to, event] as [TaskState, TaskState, EventType]));
}
