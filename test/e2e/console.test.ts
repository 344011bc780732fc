// The web console (/console/) in a real browser: Debian's chromium driven by playwright-core,
// against a real server, with operations submitted from the CLI. Screenshots of each view are
// kept under test-results/console/.
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { CONSOLE_SECURITY_HEADERS } from "../../src/server/console-route.js";
import { bearer } from "../helpers/auth.js";
import { amctl } from "../helpers/cli.js";
import { ensureDebianPackages } from "../helpers/debian-packages.js";
import { execution, operationsClient } from "../helpers/operations.js";
import { startCountingProxy } from "../helpers/counting-proxy.js";
import { repoRoot, startTestServer, tempDir, TEST_POLICIES, type TestServer } from "../helpers/server.js";

const CHROMIUM = "/usr/bin/chromium";
const screenshots = join(repoRoot, "test-results/console");

let server: TestServer;
let browser: Browser;
let env: NodeJS.ProcessEnv;

/** The test policies, with one denying rule first: a tool grant of curl is refused at admission. */
function policiesDenyingCurl(): string {
  const dir = tempDir();
  cpSync(TEST_POLICIES, dir, { recursive: true });
  const personal = join(dir, "personal.yaml");
  const source = readFileSync(personal, "utf8").replace(
    "rules:\n",
    "rules:\n  - id: console.no-curl\n    gate: toolGrant\n    effect: deny\n    when: 'input.tool == \"curl\"'\n",
  );
  writeFileSync(personal, source);
  return dir;
}

async function cli(...args: string[]): Promise<string> {
  const result = await amctl(args, env);
  expect(result, result.stderr).toMatchObject({ code: 0 });
  return result.stdout;
}

async function submitFromCli(...args: string[]): Promise<string> {
  const stdout = await cli("submit", "--json", "--profile", "profiles/console", ...args);
  return (JSON.parse(stdout.split("\n")[0]!) as { operation: { name: string } }).operation.name;
}

async function signedIn(on: TestServer, hash = "", origin = on.url): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  await page.getByLabel("Credential").fill(on.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect.poll(() => page.getByText("Signed in as test-operator").count()).toBe(1);
  if (hash) await page.goto(`${origin}/console/${hash}`);
  return page;
}

async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/** Waits until `text` is in the page (the console updates itself; nothing reloads it). */
async function seen(page: Page, selector: string, text: string | RegExp): Promise<void> {
  await page.locator(selector).filter({ hasText: text }).first().waitFor({ timeout: 20_000 });
}

beforeAll(async () => {
  await ensureDebianPackages(["chromium"]);
  mkdirSync(screenshots, { recursive: true });
  server = await startTestServer({ consoleActions: true, policyDir: policiesDenyingCurl(), auditCheckpointIntervalMs: 200 });
  env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token };
  await cli("submit", "--profile-create", "console", "--profile-type", "personal", "--wait");
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe("web console", () => {
  it("is served at /console/ with its security headers, / redirects there, and other paths stay unknown routes", async () => {
    const root = await fetch(`${server.url}/`, { redirect: "manual" });
    expect(root.status).toBe(302);
    expect(root.headers.get("location")).toBe("/console/");
    for (const path of ["/console/", "/console/console.js", "/console/console.css", "/console/config.json"]) {
      const response = await fetch(`${server.url}${path}`);
      expect(response.status, path).toBe(200);
      for (const [name, value] of Object.entries(CONSOLE_SECURITY_HEADERS)) expect(response.headers.get(name), `${path} ${name}`).toBe(value);
    }
    expect(CONSOLE_SECURITY_HEADERS["content-security-policy"]).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
    expect(await (await fetch(`${server.url}/console/config.json`)).json()).toEqual({ actions: true });
    expect((await fetch(`${server.url}/console/missing.js`)).status).toBe(404);
    const unknown = await fetch(`${server.url}/elsewhere`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: "unimplemented" });
  });

  it("keeps the credential in session storage only, never in the URL", async () => {
    const page = await signedIn(server);
    expect(page.url()).not.toContain(server.token.slice(0, 20));
    expect(await page.evaluate('sessionStorage.getItem("amctl.credential")')).toBe(server.token);
    expect(await page.evaluate("localStorage.length")).toBe(0);
    await page.close();
  });

  it("refuses a wrong credential at sign-in and asks again", async () => {
    const page = await browser.newPage();
    await page.goto(`${server.url}/console/`);
    await page.getByLabel("Credential").fill("not-a-credential");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "That credential was refused" }).waitFor();
    await screenshot(page, "sign-in-refused");
    await page.close();
  });

  it("Operations: after the connection drops, the list resumes where it was and misses nothing", async () => {
    const proxy = await startCountingProxy(Number(new URL(server.url).port));
    try {
      const page = await signedIn(server, "#/operations", proxy.url);
      // An operation that shows up live proves the stream is open before it is cut.
      const before = await submitFromCli("--grant-tool", "git");
      await page.locator(`tr[data-operation="${before}"]`).waitFor();
      proxy.cut();
      // Submitted while the stream is down: the console must fetch it when it resumes.
      const whileDown = await submitFromCli("--grant-tool", "git");
      await page.locator(`tr[data-operation="${whileDown}"]`).waitFor({ timeout: 30_000 });
      const after = await submitFromCli("--grant-tool", "git");
      await page.locator(`tr[data-operation="${after}"]`).waitFor();
      // Each operation once: a resumed stream neither repeats nor skips.
      const rows = await page.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-operation")));
      expect(new Set(rows).size).toBe(rows.length);
      await page.close();
    } finally {
      await proxy.close();
    }
  });

  it("Operations: an execution submitted from the CLI appears and completes live, newest first", async () => {
    const page = await signedIn(server, "#/operations");
    await page.getByRole("table", { name: "Operations, newest first" }).waitFor();
    await page.getByRole("status").filter({ hasText: "live" }).waitFor();
    const first = await submitFromCli("--exec", "--", "sh", "-c", "sleep 1");
    const row = page.locator(`tr[data-operation="${first}"]`);
    await row.waitFor();
    await row.locator("td.state", { hasText: "completed" }).waitFor({ timeout: 20_000 });
    const second = await submitFromCli("--grant-tool", "git");
    await page.locator(`tr[data-operation="${second}"]`).waitFor();
    const order = await page.locator("tbody tr").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-operation")));
    expect(order.indexOf(second)).toBeLessThan(order.indexOf(first));
    await screenshot(page, "operations");
    await page.close();
  });

  it("Operations: filters are in the URL, so a shared link opens the same view", async () => {
    const page = await signedIn(server, "#/operations");
    await page.getByLabel("State").selectOption({ label: "failed" });
    await page.getByRole("button", { name: "Apply filters" }).click();
    await expect.poll(() => new URL(page.url()).hash).toBe(`#/operations?state=${TaskState.FAILED}`);
    const failed = await submitFromCli("--exec", "--", "sh", "-c", "exit 3");
    await page.locator(`tr[data-operation="${failed}"]`).waitFor();
    const shared = await signedIn(server, `#/operations?state=${TaskState.FAILED}`);
    await shared.locator(`tr[data-operation="${failed}"]`).waitFor();
    expect(await shared.getByLabel("State").inputValue()).toBe(String(TaskState.FAILED));
    expect(await shared.locator("td.state").evaluateAll((cells) => cells.map((cell) => cell.textContent))).not.toContain("completed");
    await page.close();
    await shared.close();
  });

  it("An operation: its timeline live while it runs, budget bars, the admitting decisions, stop cause and artifact", async () => {
    const name = await submitFromCli("--exec", "--", "sh", "-c", "sleep 2; exit 3");
    const page = await signedIn(server, `#/operations/${name.replace("operations/", "")}`);
    await page.getByRole("heading", { name }).waitFor();
    await seen(page, ".timeline li", "start");
    await seen(page, ".timeline li", /failure → failed exit_code/);
    await seen(page, "dd[data-field='Stop cause']", "exit_code: process exited with code 3");
    await page.getByLabel("wall clock seconds").waitFor();
    expect(Number(await page.getByLabel("wall clock seconds").getAttribute("max"))).toBeGreaterThan(0);
    await seen(page, "section pre", "localAgentExecution");
    await screenshot(page, "operation-failed");

    const grant = await submitFromCli("--grant-tool", "git");
    await page.goto(`${server.url}/console/#/operations/${grant.replace("operations/", "")}`);
    const decisions = page.getByRole("region", { name: "Policy decisions" });
    await decisions.getByRole("cell", { name: "test.allow-tool-grants" }).waitFor();
    await decisions.getByRole("cell", { name: "toolGrant" }).waitFor();
    await screenshot(page, "operation");
    await page.close();
  });

  it("Audit: a refused submit shows its gate, rule and bundle; the log verifies with the operator's verifier key, and not with another", async () => {
    const refused = await amctl(["submit", "--profile", "profiles/console", "--grant-tool", "curl"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("PermissionDenied");
    const page = await signedIn(server, "#/audit?decision=denied");
    const row = page.locator("tbody tr").filter({ hasText: "console.no-curl" });
    await row.waitFor();
    expect(await row.textContent()).toContain("toolGrant");
    expect(await row.locator("td.digest").textContent()).toMatch(/^[0-9a-f]{64}$/);

    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
    await expect.poll(async () => (await audit.getCheckpoint({})).checkpoint?.size ?? 0n, { timeout: 10_000 }).toBeGreaterThan(0n);
    const { verifierKey } = await audit.getCheckpoint({});
    await page.getByLabel("Verifier key").fill(verifierKey);
    await page.getByRole("button", { name: "Verify log" }).click();
    await seen(page, "[role=status]", /^Verified: records 1 to \d+ hold together/);
    await screenshot(page, "audit");

    const [name, id] = verifierKey.split("+");
    await page.getByLabel("Verifier key").fill(`${name}+${id}+${Buffer.concat([Buffer.from([1]), Buffer.alloc(32, 7)]).toString("base64")}`);
    await page.getByRole("button", { name: "Verify log" }).click();
    await seen(page, "[role=status]", /^Does not verify: .*key id/);
    await page.close();
  });

  it("Delegations: revoking a delegation (after a confirmation) cancels its running operation", async () => {
    const delegations = createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
    const budget = { cpuGpuComputeSeconds: 600n, localDiskBytes: 1n << 30n, sandboxMemoryBytes: 1n << 30n, wallClockSeconds: 600n, agentConcurrency: 2n };
    const { delegation, token } = await delegations.issueDelegation({
      subject: "console-agent",
      scope: { operationTypes: [OperationType.EXECUTION_START], profiles: ["*"], budget },
    });
    const agent = createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
    const { operation } = await agent.submitOperation(execution("profiles/console", ["sleep", "60"]));
    const page = await signedIn(server, "#/delegations");
    const node = page.locator(`li[data-delegation="${delegation!.name}"]`);
    await node.waitFor();
    expect(await node.textContent()).toContain("console-agent");
    // What it can still give: its wall-clock budget less the running operation's reservation.
    const { remainingBudget } = await delegations.getDelegation({ name: delegation!.name });
    expect(remainingBudget!.wallClockSeconds).toBeLessThan(600n);
    expect(await node.locator(":scope > .remaining").textContent()).toContain(`${remainingBudget!.wallClockSeconds}`);
    await screenshot(page, "delegations");

    // Cancelling the confirmation revokes nothing.
    await page.getByRole("button", { name: `Revoke ${delegation!.name}` }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();
    expect((await delegations.getDelegation({ name: delegation!.name })).delegation?.revokeTime).toBeUndefined();

    await page.getByRole("button", { name: `Revoke ${delegation!.name}` }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Reason").fill("console test");
    await screenshot(page, "delegations-confirm");
    await dialog.getByRole("button", { name: "Revoke delegation" }).click();
    await seen(page, `li[data-delegation="${delegation!.name}"] .badge`, /revoked .*console test/);

    await page.goto(`${server.url}/console/#/operations/${operation!.name.replace("operations/", "")}`);
    await seen(page, "dd[data-field='State']", "cancelled");
    await seen(page, "dd[data-field='Stop cause']", "delegation_revoked");
    await screenshot(page, "operation-cancelled-by-revoke");
    await page.close();
  });

  it("Diagnostics: exports a redacted bundle and downloads it", async () => {
    const page = await signedIn(server, "#/diagnostics");
    await page.getByLabel("Profile").fill("profiles/console");
    const download = page.waitForEvent("download", { timeout: 30_000 });
    await page.getByRole("button", { name: "Export diagnostics" }).click();
    const file = await download;
    expect(file.suggestedFilename()).toMatch(/^diagnostics-[A-Za-z0-9_-]+\.tar\.gz$/);
    const saved = join(tempDir(), "bundle.tar.gz");
    await file.saveAs(saved);
    expect(readFileSync(saved).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    await screenshot(page, "diagnostics");
    await page.close();
  });

  it("is usable from the keyboard, and every control has a label", async () => {
    const page = await signedIn(server, "#/operations");
    // From a fresh load of the page, focus starts at the top.
    await page.reload();
    await page.getByLabel("State").waitFor();
    const focusOrder: string[] = [];
    for (let i = 0; i < 9; i++) {
      await page.keyboard.press("Tab");
      focusOrder.push(
        await page.locator(":focus").evaluate((active) => active.labels?.[0]?.textContent ?? active.getAttribute("aria-label") ?? active.textContent ?? ""),
      );
    }
    expect(focusOrder).toEqual(["Operations", "Delegations", "Audit", "Diagnostics", "Sign out", "State", "Type", "Profile", "Apply filters"]);
    // Enter on a focused link changes the view.
    await page.getByRole("link", { name: "Audit" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Audit", level: 1 }).waitFor();

    for (const hash of ["#/operations", "#/audit", "#/delegations", "#/diagnostics"]) {
      await page.goto(`${server.url}/console/${hash}`);
      await page.locator("main h1").waitFor();
      const unlabelled = await page
        .locator("input, select, textarea, button, meter")
        .evaluateAll((controls) =>
          controls
            .filter(
              (control) =>
                (control.labels?.length ?? 0) === 0 && !control.getAttribute("aria-label") && !(control.tagName === "BUTTON" && control.textContent?.trim()),
            )
            .map((control) => control.outerHTML),
        );
      expect(unlabelled, hash).toEqual([]);
    }
    await page.close();
  });

  it("without --console-actions offers no action, and the page runs no inline script", async () => {
    const readOnly = await startTestServer();
    try {
      const page = await signedIn(readOnly);
      const violations: string[] = [];
      page.on("console", (message) => {
        if (/Content Security Policy/.test(message.text())) violations.push(message.text());
      });
      await page.goto(`${readOnly.url}/console/#/delegations`);
      await page.locator("li[data-delegation]").first().waitFor();
      expect(await page.getByRole("button", { name: /^Revoke/ }).count()).toBe(0);
      const running = await operationsClient(readOnly.url).submitOperation({
        requestId: "console-profile",
        spec: { kind: { case: "profileCreate", value: { profileId: "ro", profileType: 1 } } },
      });
      await page.goto(`${readOnly.url}/console/#/operations/${running.operation!.name.replace("operations/", "")}`);
      await page.getByRole("heading", { name: running.operation!.name }).waitFor();
      expect(await page.getByRole("button", { name: "Cancel operation" }).count()).toBe(0);
      expect(await page.locator("script:not([src])").count()).toBe(0);
      expect(violations).toEqual([]);
      await screenshot(page, "read-only-delegations");
      await page.close();
    } finally {
      await readOnly.close();
    }
  });
});
