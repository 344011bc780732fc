// Audit records, filtered by the route's query (a denied admission shows its gate, rule and
// bundle here: a refused submit stores no operation, its record is what there is to see), and
// whether the log verifies up to the last signed checkpoint with the operator's verifier key.
import { create } from "@bufbuild/protobuf";
import { AuditDecisionFilter, AuditFilterSchema } from "../../gen/agentmachine/v1/audit_service_pb.js";
import type { AuditCheckpoint, AuditRecord } from "../../gen/agentmachine/v1/audit_pb.js";
import { denialCodeText, gatesText } from "../../model/audit-decision-text.js";
import { audit } from "../client.js";
import { verifyAuditLog } from "../audit-verify.js";
import { field, h, liveStatus, select } from "../dom.js";
import { time, typeName } from "../format.js";
import { routeHash } from "../route.js";
import type { ViewContext } from "./view.js";

const PAGE_SIZE = 100;
const VERIFY_PAGE_SIZE = 1000;

function filtersForm(params: URLSearchParams): HTMLFormElement {
  const decision = select(
    "decision",
    [
      ["", "any"],
      ["allowed", "allowed"],
      ["denied", "denied"],
    ],
    params.get("decision") ?? "",
  );
  const principal = h("input", { type: "text", name: "principal", value: params.get("principal") ?? "" });
  const delegation = h("input", { type: "text", name: "delegation", placeholder: "delegations/…", value: params.get("delegation") ?? "" });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Audit filters" },
    field("Decision", decision),
    field("Principal", principal),
    field("Delegation", delegation),
    h("button", { type: "submit" }, "Apply filters"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = routeHash("audit", { decision: decision.value, principal: principal.value.trim(), delegation: delegation.value.trim() });
  });
  return form;
}

function row(record: AuditRecord): HTMLTableRowElement {
  const decision = record.decision;
  return h(
    "tr",
    { "data-sequence": String(record.sequence) },
    h("td", {}, String(record.sequence)),
    h("td", {}, time(record.time)),
    h("td", {}, record.principal),
    h("td", {}, record.rpc.replace(/^\/agentmachine\.v1\./, "")),
    h("td", {}, record.operationType ? typeName(record.operationType) : ""),
    h("td", {}, record.resource),
    h("td", { class: decision?.allowed ? "allowed" : "denied" }, decision?.allowed ? "allowed" : `denied (${decision ? denialCodeText(decision) : ""})`),
    h("td", {}, decision ? gatesText(decision) : ""),
    h("td", {}, decision?.rule ?? ""),
    h("td", { class: "digest" }, decision?.bundleDigest ?? ""),
    h("td", {}, decision?.reason ?? ""),
  );
}

/** The whole log as kept, and the checkpoint a pruned log starts from. */
async function readLog(signal: AbortSignal): Promise<{ records: AuditRecord[]; checkpoints: AuditCheckpoint[] }> {
  const records: AuditRecord[] = [];
  let pageToken = "";
  do {
    const page = await audit.listAuditRecords({ pageSize: VERIFY_PAGE_SIZE, pageToken }, { signal });
    records.push(...page.records);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  const checkpoints: AuditCheckpoint[] = [];
  do {
    const page = await audit.listCheckpoints({ pageSize: VERIFY_PAGE_SIZE, pageToken }, { signal });
    checkpoints.push(...page.checkpoints);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { records, checkpoints };
}

function verifySection(signal: AbortSignal): HTMLElement {
  const key = h("input", { type: "text", name: "verifier-key", placeholder: "name+1234abcd+base64key", autocomplete: "off", spellcheck: "false" });
  const result = liveStatus();
  const form = h("form", { "aria-label": "Verify the audit log" }, field("Verifier key", key), h("button", { type: "submit" }, "Verify log"), result);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    result.textContent = "verifying…";
    void (async () => {
      const { checkpoint } = await audit.getCheckpoint({}, { signal });
      if (checkpoint === undefined) {
        result.textContent = "No signed checkpoint yet: nothing to verify against.";
        return;
      }
      const { records, checkpoints } = await readLog(signal);
      const first = records[0]?.sequence ?? 1n;
      const start = first > 1n ? checkpoints.find((candidate) => candidate.size === first - 1n) : undefined;
      const verdict = await verifyAuditLog(records, checkpoint, start, key.value);
      result.textContent = verdict.ok
        ? `Verified: records ${start ? `${start.size + 1n}` : "1"} to ${verdict.records} hold together and match the signed checkpoint of size ${verdict.checkpointSize}.`
        : `Does not verify: ${verdict.reason}`;
      result.className = `status ${verdict.ok ? "ok" : "failed"}`;
    })().catch((error: unknown) => (result.textContent = `Could not verify: ${(error as Error).message}`));
  });
  return h("section", { "aria-labelledby": "verify-title" }, h("h2", { id: "verify-title" }, "Verify"), form);
}

export async function renderAudit({ root, route, signal }: ViewContext): Promise<void> {
  const { params } = route;
  const decision = params.get("decision");
  const filter = create(AuditFilterSchema, {
    principal: params.get("principal") ?? "",
    delegation: params.get("delegation") ?? "",
    decision: decision === "allowed" ? AuditDecisionFilter.ALLOWED : decision === "denied" ? AuditDecisionFilter.DENIED : AuditDecisionFilter.UNSPECIFIED,
  });
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const headings = ["Sequence", "Time", "Principal", "RPC", "Operation type", "Resource", "Decision", "Gate", "Rule", "Bundle digest", "Reason"];
  root.append(
    h("h1", {}, "Audit"),
    verifySection(signal),
    h("h2", {}, "Records"),
    filtersForm(params),
    h(
      "table",
      {},
      h("caption", {}, "Audit records, oldest first"),
      h("thead", {}, h("tr", {}, ...headings.map((title) => h("th", { scope: "col" }, title)))),
      body,
    ),
    more,
  );
  let pageToken = "";
  const load = async (): Promise<void> => {
    const page = await audit.listAuditRecords({ pageSize: PAGE_SIZE, pageToken, filter }, { signal });
    body.append(...page.records.map(row));
    pageToken = page.nextPageToken;
    more.hidden = pageToken === "";
  };
  more.addEventListener("click", () => void load());
  await load();
}
