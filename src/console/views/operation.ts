// One operation: what it is, its budget use against its limits, the policy decisions that
// admitted it, its stop cause and artifact, and its event timeline, live until it ends.
import { toJsonString } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../../gen/agentmachine/v1/artifact_pb.js";
import type { Budget } from "../../gen/agentmachine/v1/budget_pb.js";
import type { OperationEvent } from "../../gen/agentmachine/v1/event_pb.js";
import { StopReason, type Operation } from "../../gen/agentmachine/v1/operation_pb.js";
import { BudgetDimension } from "../../gen/agentmachine/v1/budget_pb.js";
import { EventType } from "../../gen/agentmachine/v1/types_pb.js";
import { gateName } from "../../model/policy-gates.js";
import { stopReasonName } from "../../model/stop-reasons.js";
import { isTerminal } from "../../model/transitions.js";
import { operationName } from "../../model/resource-names.js";
import { operations } from "../client.js";
import { confirmAction } from "../confirm.js";
import { h, liveStatus } from "../dom.js";
import { budgetDimensions, enumName, stateName, time, typeName } from "../format.js";
import { followResumable } from "../resumable-stream.js";
import type { ViewContext } from "./view.js";

/** What bounds the operation: the budget its execution ran under, else what it requested (defaults filled in). */
function limitsOf(operation: Operation): Budget | undefined {
  const artifact = operation.artifact?.kind;
  return artifact?.case === "localAgentExecution" ? (artifact.value.budget ?? operation.requestedBudget) : operation.requestedBudget;
}

function budgetBars(operation: Operation): HTMLElement {
  const limits = limitsOf(operation);
  const rows = budgetDimensions
    .filter(({ key }) => (limits?.[key] ?? 0n) > 0n || (operation.usage?.[key] ?? 0n) > 0n)
    .map(({ key, label }) => {
      const used = operation.usage?.[key] ?? 0n;
      const limit = limits?.[key] ?? 0n;
      const id = `budget-${key}`;
      return h(
        "div",
        { class: "bar" },
        h("label", { for: id }, label),
        h("meter", { id, min: "0", max: String(limit > 0n ? limit : used), value: String(used), high: String((limit * 9n) / 10n) }),
        h("span", {}, `${used} of ${limit > 0n ? limit : "no limit"}`),
      );
    });
  return h(
    "section",
    { "aria-labelledby": "budget-title" },
    h("h2", { id: "budget-title" }, "Budget"),
    ...(rows.length > 0 ? rows : [h("p", {}, "No budget.")]),
  );
}

function decisionsTable(operation: Operation): HTMLElement {
  const rows = operation.policyDecisions.map((decision) =>
    h(
      "tr",
      {},
      h("td", {}, gateName(decision.gate)),
      h("td", {}, decision.allowed ? "allowed" : "denied"),
      h("td", {}, decision.rule),
      h("td", { class: "digest" }, decision.bundleDigest),
      h("td", {}, decision.reason),
    ),
  );
  return h(
    "section",
    { "aria-labelledby": "decisions-title" },
    h("h2", { id: "decisions-title" }, "Policy decisions"),
    rows.length === 0
      ? h("p", {}, "No policy decision was recorded.")
      : h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ...["Gate", "Verdict", "Rule", "Bundle digest", "Reason"].map((title) => h("th", { scope: "col" }, title)))),
          h("tbody", {}, ...rows),
        ),
  );
}

function summary(operation: Operation): HTMLElement {
  const cause = operation.stopCause;
  const entries: [string, string][] = [
    ["Type", typeName(operation.type)],
    ["State", stateName(operation.state)],
    ["Profile", operation.profile],
    ["Delegation", operation.delegation],
    ["Attempt", String(operation.attempt)],
    ["Created", time(operation.createTime)],
    ["Started", time(operation.startTime)],
    ["Ended", time(operation.endTime)],
    [
      "Stop cause",
      cause === undefined || cause.reason === StopReason.UNSPECIFIED
        ? ""
        : `${stopReasonName(cause.reason)}: ${cause.message}${cause.dimension ? ` (${enumName(BudgetDimension, cause.dimension)})` : ""}`,
    ],
  ];
  return h(
    "dl",
    { class: "summary" },
    ...entries.filter(([, value]) => value !== "").flatMap(([term, value]) => [h("dt", {}, term), h("dd", { "data-field": term }, value)]),
  );
}

function eventDetail(event: OperationEvent): string {
  const { attributes } = event;
  switch (attributes.case) {
    case "progress":
      return attributes.value.message;
    case "failure":
    case "cancel":
    case "retry":
      return attributes.value.cause ? `${stopReasonName(attributes.value.cause.reason)}: ${attributes.value.cause.message}` : "";
    case "complete":
      return attributes.value.message;
    case "start":
      return attributes.value.policyDecisions.map((decision) => `${gateName(decision.gate)}: ${decision.rule}`).join("; ");
    default:
      return "";
  }
}

function eventItem(event: OperationEvent): HTMLElement {
  return h(
    "li",
    {},
    h("span", { class: "seq" }, `#${event.sequence}`),
    ` ${time(event.time)} `,
    h("strong", {}, enumName(EventType, event.type)),
    ` → ${stateName(event.state)} `,
    eventDetail(event),
  );
}

export async function renderOperation({ root, route, actions, signal }: ViewContext): Promise<void> {
  const name = operationName(route.id ?? "");
  const details = h("div");
  const timeline = h("ol", { class: "timeline", "aria-label": "Event timeline" });
  const status = liveStatus();
  root.append(
    h("h1", {}, name),
    details,
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), status, timeline),
  );

  const draw = (operation: Operation): void => {
    const cancel =
      actions && !isTerminal(operation.state)
        ? h("button", { type: "button", class: "danger", onclick: () => void cancelOperation(operation.name) }, "Cancel operation")
        : undefined;
    const artifact =
      operation.artifact?.kind.case === undefined
        ? h("p", {}, "No artifact yet.")
        : h("pre", {}, toJsonString(ArtifactSchema, operation.artifact, { prettySpaces: 2 }));
    details.replaceChildren(
      summary(operation),
      ...(cancel ? [cancel] : []),
      budgetBars(operation),
      decisionsTable(operation),
      h("section", { "aria-labelledby": "artifact-title" }, h("h2", { id: "artifact-title" }, "Artifact"), artifact),
    );
  };
  const reload = async (): Promise<void> => {
    const { operation } = await operations.getOperation({ name }, { signal });
    if (operation !== undefined) draw(operation);
  };
  const cancelOperation = async (target: string): Promise<void> => {
    const reason = await confirmAction(`Cancel ${target}? Its execution is stopped.`, "Cancel operation", "cancelled from the console");
    if (reason === undefined) return;
    await operations.cancelOperation({ name: target, reason }).catch((error: unknown) => (status.textContent = (error as Error).message));
    await reload();
  };
  await reload();

  // WatchOperation ends after the terminal event; the stream is followed (and resumed) until then.
  const done = new AbortController();
  signal.addEventListener("abort", () => done.abort());
  await followResumable(
    {
      open: (after, abort) => operations.watchOperation({ name, afterSequence: after }, { signal: abort }),
      positionOf: (message) => message.event?.sequence,
      onMessage({ event }) {
        if (event === undefined) return;
        timeline.append(eventItem(event));
        reload().catch(() => undefined);
        if (isTerminal(event.state)) {
          status.textContent = `ended: ${stateName(event.state)}`;
          done.abort();
        }
      },
      onStatus: (text) => {
        if (!done.signal.aborted) status.textContent = text;
      },
    },
    0n,
    done.signal,
  );
}
