// The sandbox end to end, over real sockets and real stores: how a server reports its
// isolation and fails closed without one; cancel, wall clock and revocation ending a sandbox
// whose processes ignore SIGTERM, and the attempt's credential dying with it; egress only
// through the plane's proxy, decided per destination, charged and audited.
import { StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContractService, SandboxMode } from "../../src/gen/agentmachine/v1/contract_service_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { PolicyGate, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { projectConfig } from "../../src/diagnostics/project-config.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { SANDBOX_HEALTH_SERVICE } from "../../src/server/server.js";
import { SANDBOX_ID } from "../../src/sandbox/sandbox.js";
import { commandLine, createProfile, execution, operationsClient, processesOf, waitForEnd } from "../helpers/operations.js";
import { proxyConnectStatus } from "../helpers/egress-proxy.js";
import { bundleSource } from "../helpers/policy.js";
import { issueAgent, roomyBudget, wideRoot } from "../helpers/runtime.js";
import { startTestServer, TEST_POLICIES, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";
import { startWorker, stopWorker, workerToken, type WorkerProcess } from "../helpers/workers.js";

function clients(url: string) {
  const transport = createGrpcTransport({ baseUrl: url, interceptors: authInterceptors(url) });
  return { contract: createClient(ContractService, transport), health: createClient(Health, transport), audit: createClient(AuditService, transport) };
}

async function isolationOf(server: TestServer) {
  const { contract, health } = clients(server.url);
  const { executionIsolation } = await contract.getContract({});
  const { status } = await health.check({ service: SANDBOX_HEALTH_SERVICE });
  return { mode: executionIsolation?.mode, detail: executionIsolation?.detail ?? "", health: status };
}

describe("isolation is reported, and missing isolation fails closed", () => {
  it("a default server sandboxes: ENFORCED in GetContract, SERVING in health", async () => {
    const server = await startTestServer();
    try {
      expect(await isolationOf(server)).toMatchObject({ mode: SandboxMode.ENFORCED, health: HealthCheckResponse_ServingStatus.SERVING });
    } finally {
      await server.close();
    }
  });

  it("without bubblewrap an execution is FailedPrecondition SANDBOX_UNAVAILABLE saying how to install it, and nothing is stored", async () => {
    const server = await startTestServer({ sandbox: { ...defaultConfig.sandbox, bwrapPath: "/nonexistent/bwrap" } });
    try {
      const isolation = await isolationOf(server);
      expect(isolation).toMatchObject({ mode: SandboxMode.UNAVAILABLE, health: HealthCheckResponse_ServingStatus.NOT_SERVING });
      const client = operationsClient(server.url);
      const profile = await createProfile(client, "closed"); // other operations still run
      const before = (await client.listOperations({})).operations.length;
      const error = await client.submitOperation(execution(profile, ["true"])).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code).toBe(Code.FailedPrecondition);
      expect(error?.findDetails(ErrorInfoSchema)[0]?.reason).toBe("SANDBOX_UNAVAILABLE");
      expect(error?.rawMessage).toContain("apt-get install -y bubblewrap");
      expect((await client.listOperations({})).operations.length).toBe(before);
    } finally {
      await server.close();
    }
  });

  it("--unsafe-no-sandbox is warned at start and shows in GetContract, health and diagnostics", async () => {
    const config: Partial<ServerConfig> = { sandbox: { ...defaultConfig.sandbox, unsafeNoSandbox: true } };
    const server = await startTestServer(config);
    try {
      expect(await isolationOf(server)).toMatchObject({ mode: SandboxMode.DISABLED_UNSAFE, health: HealthCheckResponse_ServingStatus.NOT_SERVING });
      expect(server.logs.some((line) => line.level === "warn" && String(line.msg).includes("--unsafe-no-sandbox"))).toBe(true);
      const shown = projectConfig({ ...defaultConfig, ...config }, { redactedFields: 0 });
      expect(shown.settings).toMatchObject({ sandbox: { unsafeNoSandbox: true } });
    } finally {
      await server.close();
    }
  });
});

describe("every way an attempt ends kills its whole sandbox, even processes that ignore SIGTERM", () => {
  let server: TestServer;
  const GRACE_MS = 500;
  // Every process ignores SIGTERM (an ignored signal stays ignored across fork and exec); one
  // leaves the session. The token is written out so the test can try it afterwards.
  const stubborn = ["sh", "-c", "trap '' TERM; echo \"$AMCTL_TOKEN\" > token; setsid sleep 300 & sleep 300 & echo up > ready; wait"];

  beforeAll(async () => {
    server = await startTestServer({ execution: { ...defaultConfig.execution, killGraceMs: GRACE_MS } });
  });
  afterAll(() => server.close());

  async function started(client: ReturnType<typeof operationsClient>, profile: string, budget = {}) {
    const { operation } = await client.submitOperation(execution(profile, stubborn, {}, budget));
    const name = operation!.name;
    const workspace = join(server.dataDir, "workspaces", name.replace("operations/", ""));
    await expect.poll(() => processesOf(name).length >= 3 && readFileSync(join(workspace, "token"), "utf8").includes("."), { timeout: 20_000 }).toBe(true);
    return { name, token: readFileSync(join(workspace, "token"), "utf8").trim() };
  }

  async function expectCredentialDead(token: string): Promise<void> {
    const transport = createGrpcTransport({
      baseUrl: server.url,
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ],
    });
    const error = await createClient(ContractService, transport)
      .getContract({})
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(error?.code).toBe(Code.Unauthenticated);
  }

  it("cancel", async () => {
    const client = operationsClient(server.url);
    const profile = await createProfile(client, "cancel-stubborn");
    const { name, token } = await started(client, profile);
    await client.cancelOperation({ name });
    expect((await waitForEnd(client, name)).operation.state).toBe(TaskState.CANCELLED);
    await expect.poll(() => processesOf(name), { timeout: 10_000 }).toEqual([]);
    await expectCredentialDead(token);
  });

  it("on the host, every process from bwrap down runs as the sandbox's uid and gid, with no capabilities and no groups", async () => {
    const client = operationsClient(server.url);
    const profile = await createProfile(client, "host-view");
    const { name } = await started(client, profile);
    const status = (pid: number) => readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (pid: number, key: string) => new RegExp(`^${key}:[ \\t]*([^\\n]*)$`, "m").exec(status(pid))?.[1]?.trim().split(/\s+/) ?? [];
    // From the program up to the server (the first process not of the sandbox's uid).
    const expected = String(process.getuid!() === 0 ? SANDBOX_ID : process.getuid!());
    const chain: number[] = [];
    for (let pid = processesOf(name)[0]!; field(pid, "Uid")[0] === expected && process.getuid!() === 0; pid = Number(field(pid, "PPid")[0])) chain.push(pid);
    if (process.getuid!() === 0) {
      // The program's shell, the launcher's exec of it, bwrap's init and bwrap itself at least.
      expect(chain.length).toBeGreaterThanOrEqual(3);
      expect(commandLine(chain.at(-1)!)).toMatch(/bwrap --args 4/);
    }
    for (const pid of chain) {
      expect(field(pid, "Uid")).toEqual([expected, expected, expected, expected]);
      expect(field(pid, "Gid")).toEqual([expected, expected, expected, expected]);
      expect(field(pid, "Groups")).toEqual([""]);
      for (const caps of ["CapInh", "CapPrm", "CapEff", "CapAmb"]) expect(field(pid, caps)).toEqual(["0000000000000000"]);
    }
    await client.cancelOperation({ name });
    await waitForEnd(client, name);
  });

  it("wall clock", async () => {
    const client = operationsClient(server.url);
    const profile = await createProfile(client, "clock-stubborn");
    const { name, token } = await started(client, profile, { wallClockSeconds: 3n });
    const { operation } = await waitForEnd(client, name);
    expect(operation.state).toBe(TaskState.FAILED);
    expect(operation.stopCause?.reason).toBe(StopReason.BUDGET_EXHAUSTED);
    await expect.poll(() => processesOf(name), { timeout: 10_000 }).toEqual([]);
    await expectCredentialDead(token);
  });

  it("revocation of the delegation that admitted it", async () => {
    const root = await wideRoot(server.url, server.dataDir);
    const agent = await issueAgent(root, server.url, "stubborn-agent", roomyBudget());
    const profile = await createProfile(operationsClient(server.url), "revoke-stubborn");
    const { name, token } = await started(agent.clients.operations, profile);
    await root.delegations.revokeDelegation({ name: agent.delegation.name, reason: "agent misbehaves" });
    const { operation } = await waitForEnd(operationsClient(server.url), name);
    expect(operation.state).toBe(TaskState.CANCELLED);
    await expect.poll(() => processesOf(name), { timeout: 10_000 }).toEqual([]);
    await expectCredentialDead(token);
  });
});

/** What the stand-in outside site serves at /big: 4 MiB that are not one repeated byte. */
const BIG = Buffer.from(Array.from({ length: 4 << 20 }, (_, i) => (i * 7919) & 0xff));

describe("egress goes only through the plane's proxy, decided per destination, charged and audited", () => {
  let server: TestServer;
  /** A server that runs executions on a remote worker (sandboxed there), with the same policies. */
  let workersServer: TestServer;
  let worker: WorkerProcess;
  let allowed: http.Server;
  let other: http.Server;
  let hits = { allowed: 0, other: 0 };

  async function listen(count: () => void): Promise<http.Server> {
    const site = http.createServer((req, res) => {
      count();
      if (req.url === "/big") return void res.end(BIG);
      if (req.method !== "POST") return void res.end("hello from outside\n");
      const digest = createHash("sha256");
      req.on("data", (chunk: Buffer) => digest.update(chunk));
      req.on("end", () => res.end(digest.digest("hex")));
    });
    await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
    return site;
  }
  const portOf = (site: http.Server): number => (site.address() as AddressInfo).port;
  const serverOf = { local: () => server, workers: () => workersServer };

  beforeAll(async () => {
    allowed = await listen(() => (hits.allowed += 1));
    other = await listen(() => (hits.other += 1));
    // Personal profiles: egress asked for at admission (no destination yet) is allowed, and a
    // connection only to the allowed stand-in "outside" host.
    const policies = mkdtempSync(join(tmpdir(), "amctl-egress-policies-"));
    for (const file of [
      "corporate_firewall",
      "multi_corporate_firewall",
      "local_model_provider",
      "hosted_model_provider",
      "airgapped_local_only",
      "user_owned_model",
    ]) {
      writeFileSync(join(policies, `${file}.yaml`), readFileSync(join(TEST_POLICIES, `${file}.yaml`)));
    }
    writeFileSync(
      join(policies, "personal.yaml"),
      bundleSource("personal", [
        { id: "egress.admission", gate: "networkProfile", effect: "allow", when: 'input.destination_host == ""' },
        {
          id: "egress.allowed-site",
          gate: "networkProfile",
          effect: "allow",
          when: `input.destination_host == "127.0.0.1" && input.destination_port == ${portOf(allowed)}u`,
        },
      ]),
    );
    server = await startTestServer({ policyDir: policies });
    workersServer = await startTestServer({ policyDir: policies, remoteWorkers: { leaseTtlMs: 10_000 } });
    worker = startWorker(workersServer.url, await workerToken(workersServer.dataDir, "egress-worker"));
    await worker.name();
  });
  afterAll(async () => {
    allowed.close();
    other.close();
    await stopWorker(worker);
    await Promise.all([server.close(), workersServer.close()]);
  });

  /** Runs `script` granted egress (`network`) and returns the operation as it ended. */
  async function runWithEgress(client: ReturnType<typeof operationsClient>, profile: string, script: string) {
    const request = execution(profile, ["sh", "-c", script]);
    const spec = request.spec!.kind;
    if (spec.case === "executionStart") spec.value.network = true;
    const { operation } = await client.submitOperation(request);
    return (await waitForEnd(client, operation!.name, 60_000)).operation;
  }

  const curl = (port: number) => `curl -s -o /dev/null -w '%{http_code}' --proxytunnel http://127.0.0.1:${port}/`;

  it("without `network` an execution has no route out, not even through the proxy with its own credential", async () => {
    hits = { allowed: 0, other: 0 };
    const client = operationsClient(server.url);
    const profile = await createProfile(client, "no-egress");
    // The plane's port is reachable from inside: the attempt tries the proxy on it directly,
    // with its own execution credential, and must get 403 (not granted egress at admission).
    const direct = `curl -s -o /dev/null -w '%{http_connect}' --proxy "$AMCTL_SERVER" --proxy-header "Proxy-Authorization: Bearer $AMCTL_TOKEN" --proxytunnel http://127.0.0.1:${portOf(allowed)}/`;
    const script = `${curl(portOf(allowed))}; [ -z "$HTTPS_PROXY" ] && ! curl -s --max-time 3 http://127.0.0.1:${portOf(allowed)}/ && [ "$(${direct})" = 403 ]`;
    const { operation } = await client.submitOperation(execution(profile, ["sh", "-c", script]));
    expect((await waitForEnd(client, operation!.name, 60_000)).operation.state).toBe(TaskState.COMPLETED);
    expect(hits.allowed).toBe(0);
  });

  for (const where of ["on the server", "on a remote worker"] as const) {
    it(`with \`network\`, ${where}: the allowed host is reached through the proxy, another is refused; each connection is charged and audited`, async () => {
      hits = { allowed: 0, other: 0 };
      const server = where === "on the server" ? serverOf.local() : serverOf.workers();
      const client = operationsClient(server.url);
      const profile = await createProfile(client, "egress");
      const script = `a=$(${curl(portOf(allowed))}); o=$(${curl(portOf(other))}); echo "$a $o"; [ "$a" = 200 ] && [ "$o" = 000 -o "$o" = 403 ]`;
      const ended = await runWithEgress(client, profile, script);
      // The script exits 0 only when the allowed site answered 200 and the other was refused.
      expect(ended.state).toBe(TaskState.COMPLETED);
      if (where === "on the server") {
        const workspace = join(server.dataDir, "workspaces", ended.name.replace("operations/", ""));
        expect(readFileSync(join(workspace, "stdout.1.log"), "utf8").trim()).toMatch(/^200 (000|403)$/);
      }
      expect(hits).toEqual({ allowed: 1, other: 0 });
      expect(ended.usage?.connectorCalls).toBe(1n);
      expect(ended.policyDecisions.some((d) => d.gate === PolicyGate.NETWORK_PROFILE && d.allowed)).toBe(true);

      const { records } = await clients(server.url).audit.listAuditRecords({ pageSize: 1000 });
      const egress = records.filter((record) => record.rpc === "egress" && record.resource === ended.name);
      expect(egress.map((r) => ({ port: r.egress?.port, allowed: r.decision?.allowed }))).toEqual(
        expect.arrayContaining([
          { port: portOf(allowed), allowed: true },
          { port: portOf(other), allowed: false },
        ]),
      );
      const through = egress.find((r) => r.decision?.allowed);
      expect(through?.egress?.bytesReceived).toBeGreaterThan(0n);
      expect(through?.decision?.rule).toBe("egress.allowed-site");
      // No credential (a JWT: three base64url parts) anywhere in the records.
      expect(JSON.stringify(egress, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toMatch(/eyJ[\w-]+\.[\w-]+\.[\w-]+/);
    });
  }

  it("the bridge out of the sandbox carries megabytes each way unchanged", async () => {
    const client = operationsClient(server.url);
    const profile = await createProfile(client, "egress-bulk");
    const site = `http://127.0.0.1:${portOf(allowed)}`;
    const script = [
      "head -c 3000000 /dev/urandom > upload",
      `[ "$(curl -s --proxytunnel --data-binary @upload ${site}/sha)" = "$(sha256sum upload | cut -d' ' -f1)" ]`,
      `curl -s --proxytunnel ${site}/big | sha256sum | cut -d' ' -f1`,
    ].join(" && ");
    const ended = await runWithEgress(client, profile, script);
    expect(ended.state).toBe(TaskState.COMPLETED);
    const workspace = join(server.dataDir, "workspaces", ended.name.replace("operations/", ""));
    expect(readFileSync(join(workspace, "stdout.1.log"), "utf8").trim()).toBe(createHash("sha256").update(BIG).digest("hex"));
  });

  it("refuses a caller without an execution credential of a running, egress-granted attempt", async () => {
    const answer = await proxyConnectStatus(server.url, `127.0.0.1:${portOf(allowed)}`, server.token);
    expect(answer).toBe(403);
  });
});

describe("inside the sandbox a program gets what it would get outside", () => {
  let sandboxed: TestServer;
  let unsafe: TestServer;
  beforeAll(async () => {
    sandboxed = await startTestServer();
    unsafe = await startTestServer({ sandbox: { ...defaultConfig.sandbox, unsafeNoSandbox: true } });
  });
  afterAll(() => Promise.all([sandboxed.close(), unsafe.close()]));

  async function runOn(server: TestServer, argv: string[], env: Record<string, string> = {}, budget = {}) {
    const client = operationsClient(server.url);
    const profile = await createProfile(client, `same-${Math.random().toString(36).slice(2, 8)}`);
    const { operation } = await client.submitOperation(execution(profile, argv, { env }, budget));
    const ended = (await waitForEnd(client, operation!.name, 60_000)).operation;
    const stdout = readFileSync(join(server.dataDir, "workspaces", ended.name.replace("operations/", ""), "stdout.1.log"), "utf8");
    return { ended, stdout };
  }

  it("exactly its environment: names a shell would rewrite or drop come through unchanged", async () => {
    const env = { IFS: "x", PPID: "5", OPTIND: "7", PWD: "/elsewhere", "MY.VAR": "1", "A-B": "2", SPACED: "a b\tc" };
    const print = [
      process.execPath,
      "-e",
      `const e = process.env; console.log(JSON.stringify(Object.fromEntries(${JSON.stringify(Object.keys(env))}.map((k) => [k, e[k]]))))`,
    ];
    const inside = await runOn(sandboxed, print, env);
    const outside = await runOn(unsafe, print, env);
    expect(JSON.parse(outside.stdout)).toEqual(env);
    expect(JSON.parse(inside.stdout)).toEqual(env);
  });

  it("an exit code of 128 + SIGXCPU is an exit code, not the CPU limit, when no CPU was used", async () => {
    const { ended } = await runOn(sandboxed, ["sh", "-c", "exit 152"], {}, { cpuGpuComputeSeconds: 5n });
    expect(ended.state).toBe(TaskState.FAILED);
    expect(ended.stopCause?.reason).toBe(StopReason.EXIT_CODE);
  });
});
