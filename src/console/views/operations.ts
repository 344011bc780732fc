// Operations: newest first, filtered by the route's query, kept live by WatchEvents (resumed
// after its last sequence when the stream drops).
import { create } from "@bufbuild/protobuf";
import { OperationFilterSchema, EventFilterSchema, type WatchEventsResponse } from "../../gen/agentmachine/v1/operation_service_pb.js";
import type { Operation } from "../../gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState } from "../../gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../model/transitions.js";
import { operations } from "../client.js";
import { field, h, liveStatus, select } from "../dom.js";
import { enumChoices, stateName, time, typeName } from "../format.js";
import { followResumable } from "../resumable-stream.js";
import { operationHash, routeHash } from "../route.js";
import type { ViewContext } from "./view.js";

const PAGE_SIZE = 200;

function filtersForm(params: URLSearchParams): HTMLFormElement {
  const state = select("state", [["", "any"], ...enumChoices(TaskState)], params.get("state") ?? "");
  const type = select("type", [["", "any"], ...enumChoices(OperationType)], params.get("type") ?? "");
  const profile = h("input", { type: "text", name: "profile", placeholder: "profiles/…", value: params.get("profile") ?? "" });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Operation filters" },
    field("State", state),
    field("Type", type),
    field("Profile", profile),
    h("button", { type: "submit" }, "Apply filters"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = routeHash("operations", { state: state.value, type: type.value, profile: profile.value.trim() });
  });
  return form;
}

function row(operation: Operation): HTMLTableRowElement {
  return h(
    "tr",
    { "data-operation": operation.name },
    h("td", {}, h("a", { href: operationHash(operation.name) }, operation.name)),
    h("td", {}, typeName(operation.type)),
    h("td", { class: `state state-${stateName(operation.state)}` }, stateName(operation.state)),
    h("td", {}, operation.profile),
    h("td", {}, time(operation.createTime)),
  );
}

export async function renderOperations({ root, route, signal }: ViewContext): Promise<void> {
  const { params } = route;
  const state = Number(params.get("state") ?? 0) as TaskState;
  const type = Number(params.get("type") ?? 0) as OperationType;
  const profile = params.get("profile") ?? "";
  const status = liveStatus("loading…");
  const body = h("tbody");
  root.append(
    h("h1", {}, "Operations"),
    filtersForm(params),
    status,
    h(
      "table",
      {},
      h("caption", {}, "Operations, newest first"),
      h("thead", {}, h("tr", {}, ...["Operation", "Type", "State", "Profile", "Created"].map((title) => h("th", { scope: "col" }, title)))),
      body,
    ),
  );

  const shown = new Map<string, Operation>();
  const matches = (operation: Operation): boolean => state === 0 || operation.state === state;
  const draw = (): void => {
    const newest = [...shown.values()].sort((a, b) => Number((b.createTime?.seconds ?? 0n) - (a.createTime?.seconds ?? 0n)) || b.name.localeCompare(a.name));
    body.replaceChildren(...newest.map(row));
  };
  const { operations: listed } = await operations.listOperations(
    { pageSize: PAGE_SIZE, filter: create(OperationFilterSchema, { states: state ? [state] : [], types: type ? [type] : [], profile }) },
    { signal },
  );
  for (const operation of listed) shown.set(operation.name, operation);
  draw();

  // Events of an operation not shown yet (a new one), or that ends one, bring its whole record.
  const refresh = async (name: string): Promise<void> => {
    const { operation } = await operations.getOperation({ name }, { signal });
    if (operation === undefined) return;
    if (matches(operation)) shown.set(name, operation);
    else shown.delete(name);
    draw();
  };
  // Every listed operation's events up to its last sequence are reflected in the list.
  const start = listed.reduce((max, operation) => (operation.lastSequence > max ? operation.lastSequence : max), 0n);
  void followResumable<WatchEventsResponse>(
    {
      open: (after, abort) =>
        operations.watchEvents({ afterSequence: after, filter: create(EventFilterSchema, { operationTypes: type ? [type] : [], profile }) }, { signal: abort }),
      positionOf: (message) => (message.kind.case === undefined ? undefined : message.kind.value.sequence),
      onMessage(message) {
        if (message.kind.case !== "event") return;
        const event = message.kind.value;
        const known = shown.get(event.operation);
        if (known === undefined || isTerminal(event.state)) {
          refresh(event.operation).catch(() => undefined);
          return;
        }
        known.state = event.state;
        if (!matches(known)) shown.delete(known.name);
        draw();
      },
      onStatus: (text) => (status.textContent = text),
    },
    start,
    signal,
  );
}
