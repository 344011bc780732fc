// agentmachine.v1.OutputService: thin — the operation as the caller may see it (another
// profile's is NotFound), then the output watch of src/lifecycle/output-watch.ts, for as long as
// the caller's authority lasts and it keeps up with the stream.
import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { OutputService, WatchOutputResponseSchema } from "../gen/agentmachine/v1/output_service_pb.js";
import type { Authority } from "../governance/authority.js";
import { outputStreamEnum, outputStreamName } from "../executors/output-streams.js";
import { watchOutput, type OutputItem, type OutputWakeUps } from "../lifecycle/output-watch.js";
import { visibleOperation } from "../lifecycle/visible-operation.js";
import type { PlaneMetrics } from "../metrics/plane-metrics.js";
import { principalOf } from "../call/principal.js";
import { cutOffWhenStalled, StallGuard } from "../call/raw-request.js";
import type { StoreEvents, StoreOperations, StoreOutput } from "../store/store.js";
import { noteOperation } from "../telemetry/tracer.js";
import { whileAuthorized } from "./while-authorized.js";

export interface OutputServiceDeps {
  store: StoreOperations & StoreEvents & StoreOutput;
  wakeUps: OutputWakeUps;
  authority: Authority;
  /** The period of the slow-subscriber check (src/server/raw-response.ts). */
  slowSubscriberTimeoutMs: number;
  metrics?: PlaneMetrics;
}

function responseOf(item: OutputItem): MessageInitShape<typeof WatchOutputResponseSchema> {
  const where = { attempt: item.key.attempt, stream: outputStreamEnum(item.key.stream), offset: item.offset };
  return item.kind === "chunk"
    ? { kind: { case: "chunk", value: { ...where, data: item.data } } }
    : { kind: { case: "end", value: { ...where, truncated: item.truncated } } };
}

export function outputService(deps: OutputServiceDeps): ServiceImpl<typeof OutputService> {
  const { store } = deps;
  return {
    async *watchOutput(request, context) {
      const principal = principalOf(context);
      noteOperation(request.name);
      const operation = await visibleOperation(store, principal, request.name);
      yield* whileAuthorized(deps.authority, principal, context, async function* (signal): AsyncGenerator<MessageInitShape<typeof WatchOutputResponseSchema>> {
        const items = watchOutput(store, deps.wakeUps, {
          operation,
          attempt: request.attempt,
          streams: request.streams.map(outputStreamName),
          offsets: { stdout: request.stdoutOffset, stderr: request.stderrOffset },
          follow: request.follow,
          signal,
        });
        for await (const item of cutOffWhenStalled(items, new StallGuard(context, deps.slowSubscriberTimeoutMs, deps.metrics))) yield responseOf(item);
      });
    },
  };
}
