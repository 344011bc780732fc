// Delegations as trees from each root the caller can see, with each node's scope and what it
// can still give (its remaining budget); revoke
// (which revokes the subtree and cancels its operations) when the server allows actions.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Budget } from "../../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../../gen/agentmachine/v1/delegation_pb.js";
import { allPages, MAX_PAGE_SIZE } from "../../model/all-pages.js";
import { delegations } from "../client.js";
import { confirmAction } from "../confirm.js";
import { h, liveStatus } from "../dom.js";
import { budgetSummary, time, typeName } from "../format.js";
import type { ViewContext } from "./view.js";

function statusOf(delegation: Delegation, now: Date): string {
  if (delegation.revokeTime !== undefined) return `revoked ${time(delegation.revokeTime)}${delegation.revokeReason ? `: ${delegation.revokeReason}` : ""}`;
  if (delegation.expireTime !== undefined && timestampDate(delegation.expireTime) <= now) return `expired ${time(delegation.expireTime)}`;
  return "active";
}

function scopeText(delegation: Delegation): string {
  const scope = delegation.scope;
  if (scope === undefined) return "no scope";
  return [
    `types: ${scope.operationTypes.map(typeName).join(", ") || "none"}`,
    `profiles: ${scope.profiles.join(", ") || "none"}`,
    ...(scope.tools.length > 0 ? [`tools: ${scope.tools.join(", ")}`] : []),
    scope.mayDelegate ? "may delegate" : "may not delegate",
    ...(scope.auditRead ? ["reads the audit log"] : []),
  ].join("; ");
}

export async function renderDelegations({ root, actions, signal }: ViewContext): Promise<void> {
  const status = liveStatus();
  const trees = h("div");
  root.append(h("h1", {}, "Delegations"), status, trees);

  const revoke = async (delegation: Delegation): Promise<void> => {
    const reason = await confirmAction(
      `Revoke ${delegation.name} (${delegation.subject})? Its descendants are revoked too and their running operations cancelled.`,
      "Revoke delegation",
      "revoked from the console",
    );
    if (reason === undefined) return;
    try {
      const { revokedCount } = await delegations.revokeDelegation({ name: delegation.name, reason });
      status.textContent = `revoked ${revokedCount} delegation(s)`;
    } catch (error) {
      status.textContent = (error as Error).message;
    }
    await load();
  };

  const node = (delegation: Delegation, children: Map<string, Delegation[]>, remaining: Record<string, Budget>, now: Date): HTMLElement => {
    const state = statusOf(delegation, now);
    const below = children.get(delegation.name) ?? [];
    return h(
      "li",
      { "data-delegation": delegation.name },
      h("div", { class: "node" }, h("strong", {}, delegation.subject), ` ${delegation.name} `, h("span", { class: "badge" }, state)),
      h("div", { class: "scope" }, scopeText(delegation)),
      h("div", { class: "scope" }, `budget: ${budgetSummary(delegation.scope?.budget)}`),
      h("div", { class: "scope remaining" }, `remaining: ${budgetSummary(remaining[delegation.name])}`),
      actions && state === "active"
        ? h("button", { type: "button", class: "danger", "aria-label": `Revoke ${delegation.name}`, onclick: () => void revoke(delegation) }, "Revoke")
        : undefined,
      below.length > 0 ? h("ul", {}, ...below.map((child) => node(child, children, remaining, now))) : undefined,
    );
  };

  const load = async (): Promise<void> => {
    // The whole tree: every page.
    const all: Delegation[] = [];
    const remainingBudgets: Record<string, Budget> = {};
    for await (const page of allPages((pageToken) => delegations.listDelegations({ includeInactive: true, pageSize: MAX_PAGE_SIZE, pageToken }, { signal }))) {
      all.push(...page.delegations);
      Object.assign(remainingBudgets, page.remainingBudgets);
    }
    const names = new Set(all.map((delegation) => delegation.name));
    const children = new Map<string, Delegation[]>();
    for (const delegation of all) children.set(delegation.parent, [...(children.get(delegation.parent) ?? []), delegation]);
    // A root is one whose parent this caller cannot see (or that has none).
    const roots = all.filter((delegation) => !names.has(delegation.parent));
    const now = new Date();
    trees.replaceChildren(
      ...(roots.length > 0 ? roots.map((root) => h("ul", { class: "tree" }, node(root, children, remainingBudgets, now))) : [h("p", {}, "No delegations.")]),
    );
  };
  await load();
}
