// Where the page is: `#/<view>[/<id>][?<filters>]`. Everything a view shows is decided by its
// route, so a URL can be shared and opens the same view with the same filters.
import { operationIdOf } from "../model/resource-names.js";

export type View = "operations" | "operation" | "delegations" | "audit" | "diagnostics";

export interface Route {
  view: View;
  /** The operation's id, for the operation view. */
  id?: string;
  params: URLSearchParams;
}

const VIEWS: readonly View[] = ["operations", "operation", "delegations", "audit", "diagnostics"];

export function parseRoute(hash: string): Route {
  const [path = "", query = ""] = hash.replace(/^#\/?/, "").split("?", 2);
  const [first = "", id] = path.split("/");
  const params = new URLSearchParams(query);
  if (first === "operations" && id) return { view: "operation", id: decodeURIComponent(id), params };
  const view = VIEWS.find((name) => name === first) ?? "operations";
  return { view, params };
}

/** The hash of a view: `params` without empty values. */
export function routeHash(view: Exclude<View, "operation">, params: Record<string, string> = {}): string {
  const query = new URLSearchParams(Object.entries(params).filter(([, value]) => value !== ""));
  return `#/${view}${query.size > 0 ? `?${query}` : ""}`;
}

export function operationHash(name: string): string {
  return `#/operations/${encodeURIComponent(operationIdOf(name))}`;
}
