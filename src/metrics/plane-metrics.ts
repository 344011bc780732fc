// The plane's own metrics (prefix `amctl_`), on a registry of this server's: several servers in
// one process (tests, the bench) never share a series. Domains report facts through the small
// methods below; the state that is cheaper to read than to track (operations not yet ended,
// executions of this server, the audit log's length) is read when Prometheus scrapes.
//
// No label holds an identifier or anything a user names (operation, delegation, request,
// principal, profile): every label value comes from a fixed set — operation types, task states,
// event types, gates, RPC method names, store methods.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { TalliedCounter, type Tally } from "./tallied-counter.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { StoreAudit, StoredEvent, StoreOperations } from "../store/store.js";
import { StopReason, type Operation, type PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import { EventType, type OperationType, type PolicyGate, type TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { eventTypeNames, operationTypeNames, taskStateNames } from "../model/mapping.js";
import type { BudgetDimensionName } from "../model/budget-dimensions.js";
import { gateName, gates, policyGates } from "../model/policy-gates.js";
import { stopReasonName } from "../model/stop-reasons.js";

/** What the runner of this server has in hand (src/lifecycle/operation-runner.ts). */
export interface ExecutionCounts {
  executionCounts(): { running: number; queued: number };
}

/**
 * Budget spent, one counter per dimension that is spent for good (memory and disk are peaks,
 * not amounts): a metric has one unit, so that summing its series means something.
 */
const consumedDimensions: readonly [BudgetDimensionName, string, string][] = [
  ["modelCalls", "amctl_budget_consumed_model_calls_total", "Model calls"],
  ["tokens", "amctl_budget_consumed_tokens_total", "Tokens"],
  ["connectorCalls", "amctl_budget_consumed_connector_calls_total", "Connector calls"],
  ["cpuGpuComputeSeconds", "amctl_budget_consumed_compute_seconds_total", "CPU/GPU compute seconds"],
  ["wallClockSeconds", "amctl_budget_consumed_wall_clock_seconds_total", "Wall-clock seconds"],
];

/** Store writes take milliseconds; the tail matters (fsync, a PostgreSQL round trip under load). */
const STORE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

const SANDBOX_FAILED = "sandbox_failed";

/**
 * A read at scrape time that the store cannot answer (a PostgreSQL store that lost its database
 * says so in the log) leaves its series as the last scrape saw them, rather than failing the scrape.
 */
const unreadable = (): null => null;

const count = (tally: Tally): void => {
  tally.value += 1;
};

function typeName(type: OperationType): string {
  return operationTypeNames.get(type) ?? "unspecified";
}

function stateName(state: TaskState): string {
  return taskStateNames.get(state) ?? "unspecified";
}

/** `make`, called once per key: the series of each label value is looked up by value, not by label. */
function memo<K, V>(make: (key: K) => V): (key: K) => V {
  const made = new Map<K, V>();
  return (key) => {
    let value = made.get(key);
    if (value === undefined) {
      value = make(key);
      made.set(key, value);
    }
    return value;
  };
}

/** The stop cause a failure or retry event gives for the attempt that ended. */
function attemptCause(event: StoredEvent["event"]): string | undefined {
  const { attributes } = event;
  return attributes.case === "failure" || attributes.case === "retry" ? stopReasonName(attributes.value.cause?.reason ?? StopReason.UNSPECIFIED) : undefined;
}

export class PlaneMetrics {
  readonly registry = new Registry();
  private readonly registers = [this.registry];

  private readonly stateChanges = new TalliedCounter({
    name: "amctl_operation_state_changes_total",
    help: "Operations this server moved into a task state (a submit that creates one: queued), by operation type and state.",
    labelNames: ["operation_type", "state"] as const,
    registers: this.registers,
  });
  private readonly eventsAppended = new TalliedCounter({
    name: "amctl_events_appended_total",
    help: "Lifecycle events this server appended to the event log, by event type.",
    labelNames: ["event_type"] as const,
    registers: this.registers,
  });
  private readonly subscribers = new Gauge({
    name: "amctl_subscribers",
    help: "Watch streams (WatchEvents, WatchOperation, WatchAuditRecords) open on this server.",
    labelNames: ["grpc_method"] as const,
    registers: this.registers,
  });
  private readonly cutOff = new Counter({
    name: "amctl_subscribers_cut_off_total",
    help: "Watch streams this server cut off because their client stopped reading (it resumes from its last sequence).",
    labelNames: ["grpc_method"] as const,
    registers: this.registers,
  });
  private readonly policyDecisions = new TalliedCounter({
    name: "amctl_policy_decisions_total",
    help: "Policy gate decisions, by gate and verdict (allow or deny); EvaluatePolicy's dry runs included.",
    labelNames: ["gate", "verdict"] as const,
    registers: this.registers,
  });
  private readonly checkpoints = new Counter({
    name: "amctl_audit_checkpoints_signed_total",
    help: "Audit checkpoints this server signed and stored.",
    registers: this.registers,
  });
  private readonly sandboxFailures = new Counter({
    name: "amctl_sandbox_failures_total",
    help: "Execution attempts that ended because their sandbox could not be set up (stop cause sandbox_failed).",
    registers: this.registers,
  });
  private readonly storeWrites = new Histogram({
    name: "amctl_store_commit_duration_seconds",
    help: "Time from a store write's call to its durable answer, by store method.",
    labelNames: ["method"] as const,
    buckets: STORE_BUCKETS,
    registers: this.registers,
  });
  private readonly consumed = consumedDimensions.map(
    ([dimension, name, what]) =>
      [
        dimension,
        new Counter({ name, help: `${what} spent by operations whose budget this server settled (when they ended).`, registers: this.registers }),
      ] as const,
  );

  private readonly stateChange = memo((type: OperationType) =>
    memo((state: TaskState) => this.stateChanges.tally({ operation_type: typeName(type), state: stateName(state) })),
  );
  private readonly eventAppend = memo((type: EventType) => this.eventsAppended.tally({ event_type: eventTypeNames.get(type) ?? "unspecified" }));
  private readonly policyDecision = memo((gate: PolicyGate) =>
    memo((allowed: boolean) => this.policyDecisions.tally({ gate: gateName(gate), verdict: allowed ? "allow" : "deny" })),
  );
  private readonly storeWriteSeries = memo((method: string) => this.storeWrites.labels(method));

  constructor() {
    // Series of known label values start at 0, so that the first increase shows in rate().
    for (const [type] of operationTypeNames) for (const [state] of taskStateNames) this.stateChange(type)(state);
    for (const [type] of eventTypeNames) this.eventAppend(type);
    for (const gate of gates) for (const allowed of [true, false]) this.policyDecision(policyGates.get(gate)!)(allowed);
  }

  /**
   * The gauges read at scrape time: operations not yet ended (from the store: the same on every
   * replica sharing it), executions of this server, and the audit log's length (from the store).
   */
  watch(store: Pick<StoreOperations, "listActiveOperations"> & Pick<StoreAudit, "auditHead">, runner: ExecutionCounts): void {
    new Gauge({
      name: "amctl_operations_active",
      help: "Operations in the store not yet ended (queued, running or retrying), by operation type and state; the same on every server sharing the store.",
      labelNames: ["operation_type", "state"] as const,
      registers: this.registers,
      async collect() {
        const operations = await store.listActiveOperations().catch(unreadable);
        if (operations === null) return;
        this.reset();
        for (const operation of operations) this.labels(typeName(operation.type), stateName(operation.state)).inc();
      },
    });
    new Gauge({
      name: "amctl_executions",
      help: "Executions (execution.start, container.run) this server is running, and those waiting here for a slot (queued).",
      labelNames: ["state"] as const,
      registers: this.registers,
      collect() {
        const { running, queued } = runner.executionCounts();
        this.labels("running").set(running);
        this.labels("queued").set(queued);
      },
    });
    new Counter({
      name: "amctl_audit_records_total",
      help: "Records appended to the audit log (its head's sequence), by every server sharing the store.",
      registers: this.registers,
      async collect() {
        const head = await store.auditHead().catch(unreadable);
        if (head === null) return;
        this.reset();
        this.inc(Number(head?.sequence ?? 0n));
      },
    });
  }

  /** A write of this server created `operation` (and appended `event`, if any). */
  operationCreated(operation: Operation, event: StoredEvent | undefined): void {
    count(this.stateChange(operation.type)(operation.state));
    if (event !== undefined) this.eventAppended(event);
  }

  /** A write of this server appended `event`: every event but progress records a state change. */
  eventAppended({ event, operationType }: StoredEvent): void {
    count(this.eventAppend(event.type));
    if (event.type !== EventType.PROGRESS) count(this.stateChange(operationType)(event.state));
    if (attemptCause(event) === SANDBOX_FAILED) this.sandboxFailures.inc();
  }

  /** A write of this server settled an ended operation's budget: `spent` is what it used. */
  budgetSettled(spent: Budget): void {
    for (const [dimension, counter] of this.consumed) if (spent[dimension] > 0n) counter.inc(Number(spent[dimension]));
  }

  /** Starts timing a store write; call the result when it has answered. */
  storeWrite(method: string): () => void {
    const series = this.storeWriteSeries(method);
    const start = performance.now();
    return () => series.observe((performance.now() - start) / 1000);
  }

  policyDecided(decisions: readonly PolicyDecision[]): void {
    for (const { gate, allowed } of decisions) count(this.policyDecision(gate)(allowed));
  }

  checkpointSigned(): void {
    this.checkpoints.inc();
  }

  /** A watch stream of `method` opened; call the result when it closes (again: no effect). */
  subscriberConnected(method: string): () => void {
    this.subscribers.labels(method).inc();
    let open = true;
    return () => {
      if (open) this.subscribers.labels(method).dec();
      open = false;
    };
  }

  subscriberCutOff(method: string): void {
    this.cutOff.labels(method).inc();
  }
}
