// Signed checkpoints of the audit log. Every `intervalMs`, as soon as `everyRecords` records
// were appended through this server since the newest checkpoint, and once at close, if the
// head moved past the newest checkpoint, it signs the head (src/audit/signed-note.ts) and
// stores the checkpoint. Replicas on one store all do so: they must sign with the same key
// (`amctl serve --audit-key FILE`), and a checkpoint of a size already stored is kept as it is.
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AuditCheckpointSchema, type AuditCheckpoint } from "../gen/agentmachine/v1/audit_pb.js";
import type { Logger } from "../api/logger.js";
import type { PlaneMetrics } from "../metrics/plane-metrics.js";
import type { StoreAudit } from "../store/store.js";
import type { AuditKey } from "./audit-key.js";
import { signCheckpoint } from "./signed-note.js";

export interface CheckpointerOptions {
  store: StoreAudit;
  key: AuditKey;
  /** The log's origin line, `agent-machine/audit/<log id>`. */
  origin: string;
  intervalMs: number;
  everyRecords: number;
  log: Logger;
  /** Set when the server keeps metrics: each checkpoint signed is counted. */
  metrics?: Pick<PlaneMetrics, "checkpointSigned">;
}

export class Checkpointer {
  private readonly timer: NodeJS.Timeout;
  /** The size of the newest checkpoint this server knows of. */
  private checkpointed = 0n;
  /** Checkpoints are made one at a time, and at most one waits for its turn. */
  private running: Promise<unknown> = Promise.resolve();
  private waiting = false;
  private closed = false;

  constructor(private readonly options: CheckpointerOptions) {
    this.timer = setInterval(() => this.schedule(), options.intervalMs);
    this.timer.unref();
    options.store.onAuditAppend((sequence) => {
      if (sequence - this.checkpointed >= BigInt(options.everyRecords)) this.schedule();
    });
  }

  private schedule(): void {
    if (this.closed || this.waiting) return;
    this.waiting = true;
    this.running = this.running
      .then(() => {
        this.waiting = false;
        return this.checkpoint();
      })
      .catch((error: unknown) => this.options.log.error({ err: error }, "could not make an audit checkpoint"));
  }

  /** Signs and stores a checkpoint of the head, unless the newest checkpoint already covers it. */
  private async checkpoint(): Promise<AuditCheckpoint | undefined> {
    const { store, key, origin } = this.options;
    const head = await store.auditHead();
    const latest = await store.latestAuditCheckpoint();
    if (latest !== undefined && latest.size > this.checkpointed) this.checkpointed = latest.size;
    if (head === undefined || head.sequence <= this.checkpointed) return undefined;
    const checkpoint = create(AuditCheckpointSchema, {
      origin,
      size: head.sequence,
      headHash: head.hash,
      signedNote: signCheckpoint(key, { origin, size: head.sequence, headHash: head.hash }),
      time: timestampNow(),
    });
    await store.putAuditCheckpoint(checkpoint);
    this.options.metrics?.checkpointSigned();
    this.checkpointed = checkpoint.size;
    return checkpoint;
  }

  /** Stops the timer and makes a last checkpoint (call it after the last write, before the store closes). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.schedule();
    this.closed = true;
    await this.running;
  }
}
