// What the span of an attempt (`executor.run`, the executor's share of one attempt of one
// operation) says about it. Its parent is the call that submitted the operation, however much
// later the attempt runs (src/lifecycle/execution-queue.ts keeps that context with the task).
import { SpanStatusCode, type Attributes, type Span } from "@opentelemetry/api";
import { ATTR_ERROR_TYPE } from "@opentelemetry/semantic-conventions";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { operationTypeNames } from "../model/mapping.js";
import type { Outcome } from "../executors/executor.js";
import { stopReasonName } from "../model/stop-reasons.js";
import { ATTR_OPERATION_NAME, ATTR_OPERATION_TYPE } from "../telemetry/tracer.js";

export function attemptAttributes(operation: Operation, attempt: number): Attributes {
  return { [ATTR_OPERATION_NAME]: operation.name, [ATTR_OPERATION_TYPE]: operationTypeNames.get(operation.type), "agentmachine.execution.attempt": attempt };
}

/** Notes on `span` how the attempt ended (a failure as the span's error, typed by its stop cause's reason); passes `outcome` on. */
export function recordOutcome(span: Span, outcome: Outcome): Outcome {
  span.setAttribute("agentmachine.execution.outcome", outcome.kind);
  if (outcome.kind === "failed") {
    span.setAttribute(ATTR_ERROR_TYPE, stopReasonName(outcome.cause.reason));
    span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.cause.message });
  }
  return outcome;
}
