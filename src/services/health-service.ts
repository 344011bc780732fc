// grpc.health.v1.Health: Check, List and Watch over the server's HealthStatus.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type Health, HealthCheckResponseSchema, type HealthCheckRequest, type HealthCheckResponse } from "../gen/grpc/health/v1/health_pb.js";
import { ServingStatus, type HealthStatus } from "../api/health.js";

export function healthService(health: HealthStatus): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = health.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status };
    },

    list() {
      const statuses: Record<string, HealthCheckResponse> = {};
      for (const service of health.services()) {
        statuses[service] = create(HealthCheckResponseSchema, { status: health.get(service) });
      }
      return { statuses };
    },

    // Sends the current status at once, then every change, until the client goes away or the
    // server shuts down. An unknown service is SERVICE_UNKNOWN (not an error), as the protocol
    // asks, since it may become known later.
    async *watch(req: HealthCheckRequest, context: HandlerContext) {
      const pending: ServingStatus[] = [health.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN];
      let wake: (() => void) | undefined;
      const unsubscribe = health.watch(req.service, (status) => {
        pending.push(status);
        wake?.();
      });
      const onAbort = (): void => wake?.();
      context.signal.addEventListener("abort", onAbort);
      try {
        // Pending statuses go out before an abort is honoured, so that on shutdown a watcher
        // still sees NOT_SERVING.
        for (;;) {
          const status = pending.shift();
          if (status !== undefined) {
            yield { status };
            continue;
          }
          if (context.signal.aborted) break;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
        // Server shutdown aborts with Unavailable: tell the watcher to reconnect elsewhere
        // rather than ending the stream as if it were complete.
        context.signal.throwIfAborted();
      } finally {
        unsubscribe();
        context.signal.removeEventListener("abort", onAbort);
      }
    },
  };
}
