// The console's entry point: asks for a credential if there is none in this tab, then draws
// the view the URL names and draws it again when the URL changes.
import { ConnectError } from "@connectrpc/connect";
import { delegations } from "./client.js";
import { currentCredential, forgetCredential, rememberCredential } from "./credential.js";
import { field, h } from "./dom.js";
import { parseRoute, routeHash, type View } from "./route.js";
import { renderAudit } from "./views/audit.js";
import { renderDelegations } from "./views/delegations.js";
import { renderDiagnostics } from "./views/diagnostics.js";
import { renderOperation } from "./views/operation.js";
import { renderOperations } from "./views/operations.js";
import type { ViewContext } from "./views/view.js";

const views: Record<View, (context: ViewContext) => Promise<void>> = {
  operations: renderOperations,
  operation: renderOperation,
  delegations: renderDelegations,
  audit: renderAudit,
  diagnostics: renderDiagnostics,
};

const NAV: [Exclude<View, "operation">, string][] = [
  ["operations", "Operations"],
  ["delegations", "Delegations"],
  ["audit", "Audit"],
  ["diagnostics", "Diagnostics"],
];

/** What the server lets the console do (`amctl serve --console-actions`). */
async function serverConfig(): Promise<{ actions: boolean }> {
  const response = await fetch("config.json", { cache: "no-store" });
  return (await response.json()) as { actions: boolean };
}

function signInForm(main: HTMLElement, problem?: string): void {
  const token = h("textarea", { name: "credential", rows: "4", autocomplete: "off", spellcheck: "false", required: true });
  const form = h(
    "form",
    { "aria-label": "Sign in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a delegation credential (amctl delegation root or issue). It is kept in this tab's session storage only, and sent to this server alone."),
    problem ? h("p", { class: "status failed", role: "alert" }, problem) : undefined,
    field("Credential", token),
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    rememberCredential(token.value);
    void start();
  });
  main.replaceChildren(form);
  token.focus();
}

function drawNav(view: View): void {
  const nav = document.getElementById("nav")!;
  nav.replaceChildren(
    h(
      "ul",
      {},
      ...NAV.map(([name, label]) =>
        h(
          "li",
          {},
          h("a", { href: routeHash(name), ...(view === name || (view === "operation" && name === "operations") ? { "aria-current": "page" } : {}) }, label),
        ),
      ),
    ),
  );
}

function drawSession(subject: string): void {
  const signOut = h(
    "button",
    {
      type: "button",
      onclick: () => {
        forgetCredential();
        location.reload();
      },
    },
    "Sign out",
  );
  document.getElementById("session")!.replaceChildren(h("span", {}, `Signed in as ${subject} `), signOut);
}

let current: AbortController | undefined;

async function show(actions: boolean): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const route = parseRoute(location.hash);
  drawNav(route.view);
  const main = document.getElementById("view")!;
  main.replaceChildren();
  try {
    await views[route.view]({ root: main, route, actions, signal: controller.signal });
  } catch (error) {
    if (!controller.signal.aborted) main.append(h("p", { class: "status failed", role: "alert" }, ConnectError.from(error).message));
  }
}

async function start(): Promise<void> {
  const main = document.getElementById("view")!;
  if (currentCredential() === undefined) {
    signInForm(main);
    return;
  }
  let subject: string;
  try {
    subject = (await delegations.whoAmI({})).delegation?.subject ?? "";
  } catch (error) {
    forgetCredential();
    signInForm(main, `That credential was refused: ${ConnectError.from(error).message}`);
    return;
  }
  drawSession(subject);
  const { actions } = await serverConfig();
  window.onhashchange = () => void show(actions);
  await show(actions);
}

void start();
