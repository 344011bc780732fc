// agentmachine.v1.WorkerService: the remote workers' side of the pool (src/workers/worker-pool.ts).
// Only a delegation with worker_profiles may connect; a revocation of it ends the stream, and
// its leases then expire unless renewed. A server that runs executions itself refuses workers.
import type { ServiceImpl } from "@connectrpc/connect";
import type { WorkerService } from "../gen/agentmachine/v1/worker_service_pb.js";
import type { Authority } from "../governance/authority.js";
import { principalOf } from "../call/principal.js";
import { notAWorker, workersDisabled } from "../workers/errors.js";
import type { WorkerPool } from "../workers/worker-pool.js";

export interface WorkerServiceDeps {
  /** Undefined on a server that runs executions itself. */
  pool: WorkerPool | undefined;
  authority: Authority;
}

export function workerService({ pool, authority }: WorkerServiceDeps): ServiceImpl<typeof WorkerService> {
  const enabledPool = (): WorkerPool => {
    if (pool === undefined) throw workersDisabled();
    return pool;
  };
  return {
    async *connect({ capacity, labels, resumeWorker }, context) {
      const workers = enabledPool();
      const principal = principalOf(context);
      if ((principal.delegation.scope?.workerProfiles.length ?? 0) === 0) throw notAWorker(principal.delegation.name);
      const revocation = authority.revocationSignal(principal);
      try {
        yield* workers.connect(principal, { capacity, labels, resumeWorker }, AbortSignal.any([context.signal, revocation.signal]));
        if (revocation.signal.aborted) throw revocation.signal.reason;
      } finally {
        revocation.dispose();
      }
    },
    heartbeat({ leases }, context) {
      return enabledPool().heartbeat(principalOf(context), leases);
    },
    reportProgress(request, context) {
      enabledPool().reportProgress(principalOf(context), request);
      return {};
    },
    reportOutcome(request, context) {
      enabledPool().reportOutcome(principalOf(context), request);
      return {};
    },
    async appendOutput(request, context) {
      await enabledPool().appendOutput(principalOf(context), request);
      return {};
    },
  };
}
