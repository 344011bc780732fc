// The escape suite (issue 13): an execution is an adversary holding a valid credential. Each
// case is a script that exits 0 when its escape worked. The whole suite runs for executions on
// the server and on a remote worker (`amctl worker`). Each case runs twice over real sockets: on a
// server started with --unsafe-no-sandbox, where it must succeed (so no case passes because
// the script itself is broken), and on a default, sandboxed server, where it must fail. Where
// an escape leaves a trace on the host (a file, a connection, a surviving process), the host
// is checked too, not only the script's word.
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StopReason, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig } from "../../src/config/config.js";
import { SANDBOX_ID } from "../../src/sandbox/sandbox.js";
import { operatorPrivateKeyFile } from "../helpers/auth.js";
import { createProfile, execution, operationsClient, processesOf, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { startWorker, stopWorker, workerToken, type WorkerProcess } from "../helpers/workers.js";

interface Side {
  server: TestServer;
  client: OperationsClient;
  profile: string;
  worker?: WorkerProcess;
}
type Sides = Record<"sandboxed" | "unsafe", Side>;

const MAX_PROCESSES = 48;
/** A TCP listener on the host that is not the plane; counts the connections it gets. */
let listener: net.Server;
let connections = 0;

beforeAll(async () => {
  listener = net.createServer((socket) => {
    connections += 1;
    socket.end("hello\n");
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
});
afterAll(() => listener.close());

/** Two servers running executions themselves, or each through one `amctl worker`; one sandboxed, one not. */
async function startSides(onWorkers: boolean): Promise<Sides> {
  const sides = {} as Sides;
  for (const [name, unsafeNoSandbox] of [
    ["sandboxed", false],
    ["unsafe", true],
  ] as const) {
    const server = await startTestServer({
      execution: { ...defaultConfig.execution, killGraceMs: 500 },
      sandbox: { ...defaultConfig.sandbox, unsafeNoSandbox, maxProcesses: MAX_PROCESSES },
      ...(onWorkers ? { remoteWorkers: { leaseTtlMs: 10_000 } } : {}),
    });
    const worker = onWorkers
      ? startWorker(server.url, await workerToken(server.dataDir, `worker-${name}`), [
          "--sandbox-max-processes",
          String(MAX_PROCESSES),
          ...(unsafeNoSandbox ? ["--unsafe-no-sandbox"] : []),
        ])
      : undefined;
    await worker?.name();
    const client = operationsClient(server.url);
    sides[name] = { server, client, profile: await createProfile(client, "escapes"), ...(worker ? { worker } : {}) };
  }
  return sides;
}

async function stopSides(sides: Sides): Promise<void> {
  for (const side of Object.values(sides)) {
    if (side.worker !== undefined) await stopWorker(side.worker);
    await side.server.close();
  }
}

async function run(side: Side, script: string, env: Record<string, string> = {}, wallClockSeconds = 30n): Promise<Operation> {
  const { operation } = await side.client.submitOperation(execution(side.profile, ["sh", "-c", script], { env }, { wallClockSeconds }));
  return (await waitForEnd(side.client, operation!.name, 60_000)).operation;
}

for (const where of ["on the server", "on a remote worker"] as const) {
  describe(`${where}:`, () => {
    let sides: Sides;
    beforeAll(async () => {
      sides = await startSides(where === "on a remote worker");
    });
    afterAll(() => stopSides(sides));

    /** The same script escapes unsandboxed (completed) and is contained in the sandbox (failed). */
    async function expectContained(script: (side: Side) => string, env: (side: Side) => Record<string, string> = () => ({})): Promise<void> {
      const unsafe = await run(sides.unsafe, script(sides.unsafe), env(sides.unsafe));
      expect(unsafe.stopCause?.message ?? "", "the escape must work without a sandbox, or the case proves nothing").toBe("");
      expect(unsafe.state).toBe(TaskState.COMPLETED);
      const sandboxed = await run(sides.sandboxed, script(sides.sandboxed), env(sides.sandboxed));
      expect(sandboxed.state).toBe(TaskState.FAILED);
      expect(sandboxed.stopCause?.reason).toBe(StopReason.EXIT_CODE);
    }

    describe("an execution cannot read", () => {
      it("the operator's private key", () => expectContained(({ server }) => `cat '${operatorPrivateKeyFile(server.dataDir)}' | grep -q 'PRIVATE KEY'`));
      it("the audit signing key", () => expectContained(({ server }) => `grep -q 'PRIVATE KEY' '${join(server.dataDir, "audit", "signing-key.pem")}'`));
      it("the store", () => expectContained(({ server }) => `head -c 16 '${join(server.dataDir, "amctl.sqlite")}' | grep -q 'SQLite format'`));
      it("/root", () => expectContained(() => "ls -a /root | grep -q '^\\.\\.$'"));
      it("the server's environment in /proc", () => expectContained(() => `grep -qa 'PATH=' /proc/${process.pid}/environ`));

      it("another workspace", async () => {
        const other = (side: Side): string => join(side.server.dataDir, "workspaces", "someone-else");
        for (const side of Object.values(sides)) {
          mkdirSync(other(side), { recursive: true });
          writeFileSync(join(other(side), "notes.txt"), "another execution's work\n");
        }
        await expectContained((side) => `grep -q 'another execution' '${join(other(side), "notes.txt")}'`);
      });

      it("another running execution's environment", async () => {
        const secret = `neighbour-${randomUUID()}`;
        const neighbours = new Map<Side, string>();
        for (const side of Object.values(sides)) {
          const { operation } = await side.client.submitOperation(execution(side.profile, ["sleep", "60"], { env: { NEIGHBOUR_SECRET: secret } }));
          await expect.poll(() => processesOf(operation!.name).length, { timeout: 20_000 }).toBeGreaterThan(0);
          neighbours.set(side, operation!.name);
        }
        // The pattern is split so that the script's own command line does not hold it.
        await expectContained(() => `p='${secret.slice(0, 9)}'; grep -qs "$p${secret.slice(9)}" /proc/[0-9]*/environ`);
        for (const [side, name] of neighbours) await side.client.cancelOperation({ name });
      });
    });

    describe("an execution cannot write outside its workspace", () => {
      // Inside, the paths above the workspace exist on the sandbox's own tmpfs: a write may
      // "succeed" there, so what counts is whether anything reached the host.
      for (const [place, dir] of [
        ["the data dir", (side: Side) => side.server.dataDir],
        ["the host's /tmp", () => "/tmp"],
      ] as const) {
        it(`into ${place}`, async () => {
          for (const [name, side] of Object.entries(sides)) {
            const target = join(dir(side), `planted-${randomUUID()}`);
            const operation = await run(side, `echo planted > '${target}'`);
            // Unconfined, the write works; confined, it fails or lands on the sandbox's own tmpfs.
            if (name === "unsafe") expect(operation.state).toBe(TaskState.COMPLETED);
            expect(existsSync(target), `${name}: ${target}`).toBe(name === "unsafe");
            rmSync(target, { force: true });
          }
        });
      }
    });

    describe("an execution has no authority of its own", () => {
      it("does not run as uid 0 (nor the server's uid)", () => expectContained(() => `[ "$(id -u)" = "${process.getuid!()}" ]`));
      it("has no capabilities, no supplementary groups, and cannot gain privileges (no_new_privs)", () =>
        // Succeeds (an escape) when any of them is present; the unsandboxed run as root has them all.
        expectContained(() =>
          [
            "grep -qE '^Cap(Inh|Prm|Eff|Bnd|Amb):[[:space:]]*0*[1-9a-f]' /proc/self/status",
            "grep -qE '^NoNewPrivs:[[:space:]]*0' /proc/self/status",
            `grep -E '^Groups:' /proc/self/status | tr -s ' \\t' '\\n' | grep -qvE '^(Groups:|${SANDBOX_ID}|)$'`,
          ].join(" || "),
        ));
      it("cannot signal the server", () => expectContained(() => `kill -0 ${process.pid}`));
      it("cannot read the server's memory map (ptrace access)", () => expectContained(() => `head -c 1 /proc/${process.pid}/maps | grep -q .`));

      it("cannot connect to a host TCP listener that is not the plane", async () => {
        const port = (listener.address() as net.AddressInfo).port;
        const before = connections;
        await expectContained(
          () => `"$NODE" -e "require('net').connect(${port}, '127.0.0.1').on('data', () => process.exit(0)).on('error', () => process.exit(1))"`,
          () => ({ NODE: process.execPath }),
        );
        expect(connections).toBe(before + 1); // the unsafe run's, and no other
      });
    });

    describe("nothing an execution starts outlives its attempt", () => {
      // Each survivor writes `up` once it has left the group, and the script waits for it, so
      // that the unsandboxed run proves a real survivor rather than one killed mid-escape.
      const waitUp = "while [ ! -s up ]; do sleep 0.05; done; exit 0";
      for (const [what, script] of [
        ["a setsid survivor", `setsid sh -c 'echo up > up; exec sleep 117' </dev/null >/dev/null 2>&1 & ${waitUp}`],
        // fork, setsid, fork again: the classic daemon, re-parented to init and in no group of ours
        ["a double-fork daemon", `( setsid sh -c 'sleep 117 </dev/null >/dev/null 2>&1 & echo up > up' & ) ; ${waitUp}`],
        ["a survivor holding the output pipes", `setsid sh -c 'echo up > up; exec sleep 117' & ${waitUp}`],
      ] as const) {
        it(`${what}: the attempt ends at once, and the survivor with it`, async () => {
          const unsafe = await run(sides.unsafe, script);
          expect(unsafe.state).toBe(TaskState.COMPLETED);
          const survivors = processesOf(unsafe.name);
          expect(survivors.length, "without a sandbox the survivor lives on").toBeGreaterThan(0);
          for (const pid of survivors) process.kill(pid, "SIGKILL");

          const began = Date.now();
          const sandboxed = await run(sides.sandboxed, script);
          expect(sandboxed.state).toBe(TaskState.COMPLETED);
          expect(Date.now() - began).toBeLessThan(30_000); // a hang limit: 117 s if it waited on the survivor
          await expect.poll(() => processesOf(sandboxed.name), { timeout: 10_000 }).toEqual([]);
        });
      }

      it("a fork bomb stays inside its process cap", async () => {
        // Bounded, so it is safe to run unsandboxed: more processes than the sandbox's cap.
        const script = `set -e; i=0; while [ $i -lt ${MAX_PROCESSES + 20} ]; do sleep 30 & i=$((i+1)); done`;
        await expectContained(() => script);
      });
    });

    describe("the way out is the plane", () => {
      it("reaches the plane at AMCTL_SERVER, unchanged, from inside", async () => {
        const operation = await run(
          sides.sandboxed,
          `curl -sf -X POST -H 'content-type: application/json' -d '{}' "$AMCTL_SERVER/grpc.health.v1.Health/Check" | grep -q SERVING`,
        );
        expect(operation.state).toBe(TaskState.COMPLETED);
      });
    });
  });
}
