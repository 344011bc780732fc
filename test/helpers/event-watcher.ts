// A WatchEvents subscriber that records everything it receives, for tests of the event-stream
// invariants: it can be disconnected (abort) and resumed from the last position it saw, and
// keeps one log of what it received across all its connections ("segments").
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, type Client } from "@connectrpc/connect";
import type { OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import type { EventFilterSchema, OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";

export type OperationClient = Client<typeof OperationService>;
export type EventFilterInit = MessageInitShape<typeof EventFilterSchema>;

export type Received = { kind: "event"; event: OperationEvent; segment: number } | { kind: "bookmark"; sequence: bigint; segment: number };

export interface Segment {
  /** The after_sequence this connection was opened with. */
  after: bigint;
  /** How it ended: still open (undefined), aborted by us, ended by the server, or an error. */
  end?: "aborted" | "ended" | ConnectError;
}

export class EventWatcher {
  readonly received: Received[] = [];
  readonly segments: Segment[] = [];
  private controller: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private lastEvent: bigint | undefined;
  private lastBookmark: bigint | undefined;
  private listeners = new Set<() => void>();

  /**
   * @param client a client whose transport may be replaced (see `useClient`) when the server restarts.
   */
  constructor(
    private client: OperationClient,
    readonly name: string,
    readonly filter?: EventFilterInit,
  ) {}

  /** Uses another client (e.g. a new transport after a server restart) for the next connections. */
  useClient(client: OperationClient): void {
    this.client = client;
  }

  get active(): boolean {
    return this.controller !== undefined;
  }

  /** The after_sequence of the first connection. */
  get start(): bigint {
    return this.segments[0]?.after ?? 0n;
  }

  get events(): OperationEvent[] {
    return this.received.flatMap((item) => (item.kind === "event" ? [item.event] : []));
  }

  get bookmarks(): bigint[] {
    return this.received.flatMap((item) => (item.kind === "bookmark" ? [item.sequence] : []));
  }

  /** The sequence this watcher has seen everything up to: where it resumes from. */
  get position(): bigint {
    let position = this.start;
    if (this.lastEvent !== undefined && this.lastEvent > position) position = this.lastEvent;
    if (this.lastBookmark !== undefined && this.lastBookmark > position) position = this.lastBookmark;
    return position;
  }

  /** Opens a connection from `after`; the watcher must not be connected. */
  connect(after: bigint): void {
    if (this.active) throw new Error(`${this.name} is already connected`);
    const controller = new AbortController();
    const segmentIndex = this.segments.length;
    const segment: Segment = { after };
    this.segments.push(segment);
    this.controller = controller;
    this.loop = (async () => {
      try {
        const stream = this.client.watchEvents({ filter: this.filter, afterSequence: after }, { signal: controller.signal });
        for await (const response of stream) {
          if (response.kind.case === "event") {
            this.received.push({ kind: "event", event: response.kind.value, segment: segmentIndex });
            this.lastEvent = response.kind.value.sequence;
          } else if (response.kind.case === "bookmark") {
            this.received.push({ kind: "bookmark", sequence: response.kind.value.sequence, segment: segmentIndex });
            this.lastBookmark = response.kind.value.sequence;
          }
          this.notify();
        }
        segment.end = "ended";
      } catch (error) {
        segment.end = controller.signal.aborted ? "aborted" : ConnectError.from(error);
      } finally {
        this.controller = undefined;
        this.notify();
      }
    })();
  }

  /** Reconnects from the last position seen. */
  resume(): void {
    this.connect(this.position);
  }

  /** Aborts the current connection and waits until its loop has stopped recording. */
  async disconnect(): Promise<void> {
    this.controller?.abort();
    await this.loop;
  }

  /** Waits until the current connection ended by itself (e.g. the server died). */
  async ended(): Promise<void> {
    await this.loop;
  }

  /** Resolves once `predicate` holds (checked after every message), or rejects after `timeoutMs`. */
  waitUntil(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        const segment = this.segments[this.segments.length - 1];
        reject(
          new Error(
            `${this.name}: timed out after ${timeoutMs} ms waiting for ${what} (position ${this.position}, connected ${this.active}, last end ${String(segment?.end)})`,
          ),
        );
      }, timeoutMs);
      this.listeners.add(check);
    });
  }

  /** Waits until this watcher has considered every event up to `sequence`. */
  caughtUp(sequence: bigint, timeoutMs: number): Promise<void> {
    return this.waitUntil(() => this.position >= sequence, timeoutMs, `position >= ${sequence}`);
  }

  /** Errors that ended a connection other than our own abort (or a server-side end). */
  errors(): ConnectError[] {
    return this.segments.flatMap((segment) => (segment.end instanceof ConnectError ? [segment.end] : []));
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}
