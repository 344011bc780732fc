// `amctl submit | get | list | cancel | watch` as child processes against a real server: what
// a person sees, what a script parses, and the exit codes both rely on.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { amctl, spawnAmctl, type CliResult } from "../helpers/cli.js";
import { repoRoot, startTestServer, tempDir, type TestServer } from "../helpers/server.js";

interface EventJson {
  sequence: string;
  operation: string;
  type: string;
  state: string;
}

const run = promisify(execFile);
/** Tests that start several amctl processes one after another (each pays Node and tsx start-up). */
const SLOW = 60_000;

let server: TestServer;
/** What amctl needs to call the test server: its address, and a credential in AMCTL_TOKEN. */
let env: NodeJS.ProcessEnv;
let cli: (...args: string[]) => Promise<CliResult>;
let progressScript: string;

/** Every line of stdout parsed as JSON. */
function jsonLines<T>(stdout: string): T[] {
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);
}

const sequences = (events: EventJson[]): string[] => events.map((event) => event.sequence);

/** Submits with `--json`, exit 0 expected; returns the operation's name. */
async function submitted(...args: string[]): Promise<string> {
  const result = await cli("submit", "--json", ...args);
  expect(result, result.stderr).toMatchObject({ code: 0 });
  return jsonLines<{ operation: { name: string } }>(result.stdout)[0]!.operation.name;
}

async function createProfile(id: string): Promise<void> {
  const result = await cli("submit", "--profile-create", id, "--profile-type", "personal", "--wait");
  expect(result, result.stderr).toMatchObject({ code: 0 });
  expect(result.stdout).toContain("type:       agent_machine.profile.create");
  expect(result.stdout).toMatch(/: completed$/m);
}

beforeAll(async () => {
  // Short bookmarks, so that an idle watch shows one within a test.
  server = await startTestServer({ bookmarkIntervalMs: 300 });
  env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token };
  cli = (...args) => amctl(args, env);
  // In the repository: an execution's sandbox sees the repository, not the test's temp dirs.
  progressScript = join(repoRoot, "test/fixtures/progress-half.cjs");
  await createProfile("cli");
});
afterAll(() => server.close());

describe("amctl submit", () => {
  it("--exec --wait shows each event, progress included, and exits 0 when the execution completes", async () => {
    const result = await cli("submit", "--profile", "profiles/cli", "--label", "suite=cli", "--exec", "--wait", "--", process.execPath, progressScript);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    expect(result.stdout).toMatch(/^type: +agent_machine\.execution\.start$/m);
    expect(result.stdout).toMatch(/^request id: +[0-9a-f-]{36}$/m);
    expect(result.stdout).toMatch(/^labels: +suite=cli$/m);
    expect(result.stdout).toMatch(/^#\d+ +operations\/\S+ +start +running +attempt 1$/m);
    expect(result.stdout).toMatch(/^#\d+ +operations\/\S+ +progress +running +50% half$/m);
    expect(result.stdout).toMatch(/^#\d+ +operations\/\S+ +complete +completed +process exited with code 0$/m);
    expect(result.stdout).toMatch(/^operations\/\S+: completed$/m);
  });

  it("--wait exits 1 and shows the cause when the execution fails", async () => {
    const result = await cli("submit", "--profile", "cli", "--exec", "--wait", "--", "sh", "-c", "exit 3");
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^#\d+ +operations\/\S+ +failure +failed +exit_code: process exited with code 3$/m);
    expect(result.stdout).toMatch(/^operations\/\S+: failed \(exit_code: process exited with code 3\)$/m);
  });

  it("--json --wait prints the response, then one event per line, ending with the terminal one", async () => {
    const result = await cli("submit", "--profile", "cli", "--json", "--wait", "--exec", "--", "true");
    expect(result.code).toBe(0);
    const [response, ...events] = jsonLines<{ operation?: { name: string; state: string }; created?: boolean } & Partial<EventJson>>(result.stdout);
    expect(response).toMatchObject({ created: true, operation: { state: "TASK_STATE_QUEUED" } });
    expect(events.map((event) => event.type)).toEqual(["EVENT_TYPE_START", "EVENT_TYPE_COMPLETE"]);
    expect(events.every((event) => event.operation === response!.operation!.name)).toBe(true);
  });

  it("-f FILE sends a whole request in proto JSON; flags add to it; the same request id again is the same operation", async () => {
    const file = join(tempDir(), "request.json");
    writeFileSync(file, JSON.stringify({ profile: "profiles/cli", spec: { toolGrantApply: { tool: "git" } }, labels: { from: "file" } }));
    const first = await cli("submit", "-f", file, "--label", "extra=flag", "--request-id", "grant-git-1", "--json");
    expect(first.code).toBe(0);
    const { operation, created } = JSON.parse(first.stdout) as {
      operation: { name: string; type: string; labels: Record<string, string>; requestId: string };
      created: boolean;
    };
    expect(created).toBe(true);
    expect(operation).toMatchObject({ type: "OPERATION_TYPE_TOOL_GRANT_APPLY", requestId: "grant-git-1", labels: { from: "file", extra: "flag" } });

    const again = await cli("submit", "-f", file, "--label", "extra=flag", "--request-id", "grant-git-1");
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`name:       ${operation.name}`);
    expect(again.stdout).toContain("(already submitted with this request id)");

    const changed = await cli("submit", "-f", file, "--request-id", "grant-git-1");
    expect(changed.code).toBe(1);
    expect(changed.stderr).toMatch(/^amctl: AlreadyExists: request_id "grant-git-1" was already used/);
  });

  it("an unknown profile is a refusal: exit 1 with FailedPrecondition on stderr", async () => {
    const result = await cli("submit", "--profile", "profiles/nobody", "--exec", "--", "true");
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe("amctl: FailedPrecondition: profiles/nobody does not exist; create it with agent_machine.profile.create first\n");
  });

  it("an invalid request is exit 1 with each field violation on its own line", async () => {
    const result = await cli("submit", "--profile", "cli", "--label", "Bad=x", "--retry", "50", "--exec", "--", "true");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^amctl: InvalidArgument: /);
    expect(result.stderr).toMatch(/^ {2}spec\.execution_start\.retry_policy\.max_attempts: must be less than or equal to 20$/m);
    expect(result.stderr).toMatch(/^ {2}labels\["Bad"\]: does not match regex pattern/m);
  });

  it.each([
    [["--bogus"], "unknown option '--bogus'"],
    [["--profile", "cli"], "say what to submit"],
    [["--profile", "cli", "--exec"], "--exec needs a command after --"],
    [["--profile-create", "x"], "--profile-create needs --profile-type"],
    [["--profile-create", "x", "--profile-type", "Personal"], "must be one of personal, corporate_firewall"],
    [["--profile", "cli", "--grant-tool", "git", "--exec", "--", "true"], "give one operation, not --exec and --grant-tool"],
    [["--profile", "cli", "--wall-clock", "-5", "--grant-tool", "git"], "--wall-clock"],
    [["-f", "/no/such/file.json"], "cannot read /no/such/file.json: ENOENT"],
  ])("usage error %j is exit 2 and nothing is sent", { concurrent: true }, async (args, message) => {
    const result = await cli("submit", ...args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
  });

  it("an unreachable server is exit 2 with Unavailable", async () => {
    const result = await amctl(["submit", "--server", "http://127.0.0.1:1", "--profile", "cli", "--grant-tool", "git"], { AMCTL_TOKEN: server.token });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^amctl: Unavailable: .*ECONNREFUSED/);
  });
});

describe("amctl get, list, cancel", () => {
  it("get shows one operation, by name or bare id; an unknown one is NotFound, exit 1", { timeout: SLOW }, async () => {
    const name = await submitted("--profile", "cli", "--grant-tool", "browser");
    const shown = await cli("get", name.replace("operations/", ""));
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^name: +${name}$`, "m"));
    expect(shown.stdout).toMatch(/^type: +agent_machine\.tool_grant\.apply$/m);
    expect(shown.stdout).toMatch(/^profile: +profiles\/cli$/m);
    const json = JSON.parse((await cli("get", name, "--json")).stdout) as { operation: { name: string } };
    expect(json.operation.name).toBe(name);

    const missing = await cli("get", "operations/01NOSUCHOPERATION");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("amctl: NotFound: operations/01NOSUCHOPERATION does not exist\n");
  });

  it("list filters, pages with --page-token, and --all follows every page", { timeout: SLOW }, async () => {
    await createProfile("pages");
    const names = await Promise.all(["a", "b", "c"].map((tool) => submitted("--profile", "pages", "--label", "batch=pages", "--grant-tool", tool, "--wait")));
    const newestFirst = [...names].sort().reverse();
    const filter = ["--profile", "profiles/pages", "--type", "agent_machine.tool_grant.apply", "--page-size", "2", "--json"];
    const listed = (result: CliResult): string[] => (JSON.parse(result.stdout) as { name: string }[]).map((op) => op.name);

    const [all, first, byLabel, table] = await Promise.all([
      cli("list", ...filter, "--all"),
      cli("list", ...filter),
      cli("list", "--label", "batch=pages", "--type", "agent_machine.profile.create", "--json"),
      cli("list", "--profile", "pages", "--state", "queued", "--state", "running", "--state", "completed"),
    ]);
    expect(all).toMatchObject({ code: 0, stderr: "" });
    const operations = JSON.parse(all.stdout) as { name: string; type: string; profile: string }[];
    expect(operations.map((op) => op.name)).toEqual(newestFirst);
    expect(operations.every((op) => op.type === "OPERATION_TYPE_TOOL_GRANT_APPLY" && op.profile === "profiles/pages")).toBe(true);

    expect(listed(first)).toEqual(newestFirst.slice(0, 2));
    const token = /--page-token (\S+)/.exec(first.stderr)?.[1];
    expect(token).toBeDefined();
    const second = await cli("list", ...filter, "--page-token", token!);
    expect(second).toMatchObject({ code: 0, stderr: "" });
    expect(listed(second)).toEqual(newestFirst.slice(2));

    expect(listed(byLabel)).toEqual([]);
    const rows = table.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^NAME +TYPE +STATE +PROFILE +CREATED$/);
    expect(rows).toHaveLength(1 + 4); // the profile itself and three grants
    expect(rows[rows.length - 1]).toMatch(/^operations\/\S+ +agent_machine\.profile\.create +completed +profiles\/pages +\d{4}-/);
  });

  it("list --type with a name that is not a contract spelling is exit 2", async () => {
    const result = await cli("list", "--type", "EXECUTION_START");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("must be one of agent_machine.profile.create");
  });

  it("cancel stops a running execution; get then shows it cancelled; a second cancel is FailedPrecondition", { timeout: SLOW }, async () => {
    const name = await submitted("--profile", "cli", "--exec", "--", "sleep", "30");
    const watch = spawnAmctl(["watch", name, "--json"], env);
    await watch.waitForLine((line) => line.includes("EVENT_TYPE_START"));

    const cancelled = await cli("cancel", name, "--reason", "test is over");
    expect(cancelled.code).toBe(0);
    expect(cancelled.stdout).toMatch(new RegExp(`^name: +${name}$`, "m"));
    expect(cancelled.stdout).toMatch(/^cancel: +operations\/\S+$/m);
    // The watch of the operation ends by itself, with the cancel event.
    expect(await watch.exited).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(watch.lines[watch.lines.length - 1]!)).toMatchObject({ operation: name, type: "EVENT_TYPE_CANCEL", state: "TASK_STATE_CANCELLED" });

    const shown = await cli("get", name);
    expect(shown.stdout).toMatch(/^state: +cancelled$/m);
    expect(shown.stdout).toMatch(/^stop cause: +cancelled: test is over$/m);

    const again = await cli("cancel", name, "--json");
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`amctl: FailedPrecondition: ${name} is cancelled: cannot cancel\n`);
  });
});

describe("amctl watch", () => {
  it("OPERATION --after N replays exactly the events after N and ends with the terminal one", { timeout: SLOW }, async () => {
    const name = await submitted("--profile", "cli", "--exec", "--wait", "--", process.execPath, progressScript);
    const all = jsonLines<EventJson>((await cli("watch", name, "--json")).stdout);
    expect(all.map((event) => event.type)).toEqual(["EVENT_TYPE_START", "EVENT_TYPE_PROGRESS", "EVENT_TYPE_COMPLETE"]);
    const resumed = await cli("watch", name, "--json", "--after", all[0]!.sequence);
    expect(resumed.code).toBe(0);
    expect(sequences(jsonLines(resumed.stdout))).toEqual(sequences(all.slice(1)));
    const human = await cli("watch", name, "--after", all[0]!.sequence);
    expect(human.stdout).toMatch(new RegExp(`^#${all[1]!.sequence} +${name} +progress +running +50% half$`, "m"));
  });

  it("with a filter follows live events with bookmarks until SIGINT (exit 0); --after the last line resumes without duplicates", {
    timeout: SLOW,
  }, async () => {
    await createProfile("resume");
    const watchProfile = (...args: string[]) => spawnAmctl(["watch", "--json", "--profile", "resume", "--type", "agent_machine.execution.start", ...args], env);
    const lastSequence = (lines: string[]): string => {
      const last = JSON.parse(lines[lines.length - 1]!) as { sequence?: string; bookmark?: { sequence: string } };
      return last.bookmark?.sequence ?? last.sequence!;
    };
    const eventsOf = (stdout: string) => jsonLines<EventJson & { operation?: string }>(stdout).slice(1);

    const first = watchProfile();
    const a = eventsOf((await cli("submit", "--profile", "resume", "--json", "--wait", "--exec", "--", "true")).stdout);
    await first.waitForLine((line) => line.includes(`"sequence":"${a[a.length - 1]!.sequence}"`));
    // Idle now: a bookmark says how far the stream has looked.
    await first.waitForLine((line) => line.startsWith('{"bookmark":{"sequence":"'));
    expect((await first.interrupt()).code).toBe(0);
    const seen = first.lines.filter((line) => !line.startsWith('{"bookmark"')).map((line) => JSON.parse(line) as EventJson);
    expect(sequences(seen)).toEqual(sequences(a));
    const after = lastSequence(first.lines);
    expect(BigInt(after)).toBeGreaterThanOrEqual(BigInt(a[a.length - 1]!.sequence));

    const b = eventsOf((await cli("submit", "--profile", "resume", "--json", "--wait", "--exec", "--", "false")).stdout);
    const second = watchProfile("--after", after);
    await second.waitForLine((line) => line.includes(`"sequence":"${b[b.length - 1]!.sequence}"`));
    const { code, stderr } = await second.interrupt();
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    const resumed = second.lines.filter((line) => !line.startsWith('{"bookmark"')).map((line) => JSON.parse(line) as EventJson);
    expect(sequences(resumed)).toEqual(sequences(b));
  });

  it("OPERATION with a filter is a usage error (exit 2)", async () => {
    const result = await cli("watch", "operations/01ANY", "--profile", "cli");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("filter a watch without OPERATION");
  });
});

describe("examples/operations.sh", () => {
  it("walks through profile, execution with --wait, list and watch --json --after against a real server", { timeout: SLOW }, async () => {
    const result = await run("bash", [join(repoRoot, "examples/operations.sh"), server.url], {
      cwd: "/tmp",
      env: { ...process.env, AMCTL_TOKEN: server.token },
    }).catch((error: { stdout?: string; stderr?: string; code?: number }) => {
      // Say where the walk-through stopped, not only that it did.
      throw new Error(`operations.sh exited ${error.code}\n--- stdout\n${error.stdout}\n--- stderr\n${error.stderr}`);
    });
    expect(result.stdout).toMatch(/progress +running +50% half way$/m);
    expect(result.stdout).toMatch(/^operations\/\S+: completed$/m);
    expect(result.stdout).toMatch(/^NAME +TYPE +STATE/m);
    const [, json, resumed] = /# Its events as JSON lines.*\n([\s\S]*?)# \.\.\.and resumes.*\n([\s\S]*?)# All events/.exec(result.stdout) ?? [];
    const all = jsonLines<EventJson>(json ?? "");
    expect(all).toHaveLength(3);
    expect(sequences(jsonLines(resumed ?? ""))).toEqual(sequences(all.slice(1)));
  });
});
