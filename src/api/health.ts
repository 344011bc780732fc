// Serving status per service name for grpc.health.v1 ("" is the server as a whole). Watchers
// are told every change; on shutdown everything turns NOT_SERVING before streams drain.
import { EventEmitter } from "node:events";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

export { ServingStatus };

export class HealthStatus {
  private readonly statuses = new Map<string, ServingStatus>();
  /** Statuses that state a fact of the configuration: `setAll` leaves them alone. */
  private readonly pinned = new Set<string>();
  private readonly changes = new EventEmitter();

  constructor(services: readonly string[]) {
    this.changes.setMaxListeners(0);
    for (const service of ["", ...services]) this.statuses.set(service, ServingStatus.SERVING);
  }

  services(): string[] {
    return [...this.statuses.keys()];
  }

  /** undefined for a service this server does not know. */
  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    this.changes.emit("change", service, status);
  }

  setAll(status: ServingStatus): void {
    for (const service of this.statuses.keys()) if (!this.pinned.has(service)) this.set(service, status);
  }

  /** Adds `service` with a status that only `set` changes (e.g. whether executions are sandboxed). */
  pin(service: string, status: ServingStatus): void {
    this.pinned.add(service);
    this.set(service, status);
  }

  /** Calls `listener` on each change of `service`; returns the unsubscribe function. */
  watch(service: string, listener: (status: ServingStatus) => void): () => void {
    const onChange = (changed: string, status: ServingStatus): void => {
      if (changed === service) listener(status);
    };
    this.changes.on("change", onChange);
    return () => this.changes.off("change", onChange);
  }
}
