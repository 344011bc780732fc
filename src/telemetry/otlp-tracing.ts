// Export of the server's spans over OTLP (HTTP/protobuf), started by `amctl serve` when the
// environment names a collector, the way every OpenTelemetry SDK is configured:
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), plus the exporter's,
// batching's and sampler's own OTEL_* variables, which the SDK reads itself. Without an endpoint
// nothing is started and the API stays a no-op (tracer.ts).
import { diag, DiagLogLevel, type DiagLogger } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import { keepAsyncContext } from "../api/async-context.js";
import type { Logger } from "../api/logger.js";

/** `service.name` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise. */
const SERVICE_NAME = "amctl";

const SUPPORTED_PROTOCOL = "http/protobuf";

export interface Tracing {
  /** Exports what is still buffered, then stops. */
  shutdown(): Promise<void>;
}

/** The SDK's own problems (an unreachable collector, say) as warnings in the server's log. */
function diagnostics(log: Logger): DiagLogger {
  const warn = (message: string, ...args: unknown[]): void => log.warn({ args }, `opentelemetry: ${message}`);
  const ignore = (): void => {};
  return { error: warn, warn, info: ignore, debug: ignore, verbose: ignore };
}

/**
 * Registers a tracer provider that batches spans to the OTLP endpoint the environment names,
 * with W3C trace context propagation, in the process's async context; undefined, and
 * nothing registered, when no endpoint is set (or OTEL_SDK_DISABLED=true, or an OTLP protocol
 * other than HTTP/protobuf is asked for: that is logged).
 */
export function startTracing(env: NodeJS.ProcessEnv, log: Logger): Tracing | undefined {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return undefined;
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || SUPPORTED_PROTOCOL;
  if (protocol !== SUPPORTED_PROTOCOL) {
    log.warn({ protocol }, `traces are not exported: only the OTLP protocol ${SUPPORTED_PROTOCOL} is supported`);
    return undefined;
  }
  diag.setLogger(diagnostics(log), DiagLogLevel.WARN);
  const provider = new NodeTracerProvider({
    resource: defaultResource()
      .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: SERVICE_NAME }))
      .merge(detectResources({ detectors: [envDetector] })),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  // The process's one async context (src/api/async-context.ts), rather than a second
  // AsyncLocalStorage of the provider's own.
  keepAsyncContext();
  provider.register({ contextManager: null });
  // The origin only: a URL may carry credentials.
  log.info({ endpoint: originOf(endpoint) }, "exporting traces over OTLP");
  return { shutdown: () => provider.shutdown() };
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(not a URL)";
  }
}
