// The kill -9 test. `amctl serve` runs as a child process on one data dir, over and over: each
// cycle a WatchEvents subscriber resumes from the last sequence it saw, a burst of concurrent
// submits runs, and the server is SIGKILLed at a random moment in the middle of it. After each
// kill the SQLite file is checked from outside (read-only): it is sound, every acknowledged
// submit is in it, every event the subscriber received is in it. After each restart: the
// acknowledged submits are still served (by name, and idempotently by request id), the event
// order continues without a gap, every task interrupted by the kill ends, and the ones that
// were running record why: `server_restart`.
//
// AMCTL_DURABILITY_CYCLES and AMCTL_DURABILITY_SEED replay a particular run.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create, equals } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { OperationEventSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { StopReason, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationService, SubmitOperationRequestSchema, type SubmitOperationRequest } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { EventType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../src/model/transitions.js";
import { bearer } from "../helpers/auth.js";
import { contiguityViolations, describeEvent, lifecycleViolations } from "../helpers/event-invariants.js";
import { EventWatcher, type OperationClient } from "../helpers/event-watcher.js";
import { repoRoot, startChildServer, tempDir, type ChildServer } from "../helpers/server.js";
import { readStoreFile, seededRandom, storeLatestSequence, type StoreSnapshot } from "../helpers/store-file.js";

const CYCLES = Number(process.env.AMCTL_DURABILITY_CYCLES ?? 20);
const SEED = Number(process.env.AMCTL_DURABILITY_SEED ?? Math.floor(Math.random() * 2 ** 31));
/** Submits per cycle at most; the kill normally comes long before. */
const MAX_SUBMITS_PER_CYCLE = 400;
const PROFILE = "profiles/durable";
/** Fast retries, so that recovery settles quickly. */
const RETRY = { maxAttempts: 2, initialBackoff: durationFromMs(20), maxBackoff: durationFromMs(100) };

interface Ack {
  request: SubmitOperationRequest;
  name: string;
  cycle: number;
}

function makeRequest(cycle: number, index: number, random: () => number): SubmitOperationRequest {
  const requestId = `dur-${SEED}-${cycle}-${index}`;
  const labels = { cycle: String(cycle) };
  const roll = random();
  if (roll < 0.4) {
    return create(SubmitOperationRequestSchema, {
      requestId,
      profile: PROFILE,
      labels,
      spec: { kind: { case: "toolGrantApply", value: { tool: `tool-${index % 7}` } } },
    });
  }
  const argv = roll < 0.75 ? ["true"] : ["sh", "-c", "exit 3"];
  return create(SubmitOperationRequestSchema, {
    requestId,
    profile: PROFILE,
    labels,
    spec: { kind: { case: "executionStart", value: { argv, retryPolicy: RETRY } } },
  });
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/**
 * A client of `server` sending `token`. Every cycle sends the first server's credential: a retry
 * is answered as one only under the delegation that submitted it (request ids are scoped to it).
 */
function clientFor(server: ChildServer, token: string): OperationClient {
  return createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
}

/**
 * Starts `amctl serve` on `dataDir` and SIGKILLs it after `afterMs`, whether or not it got to
 * serving: a kill in the middle of start-up and recovery. Resolves when it is gone.
 */
async function killDuringStartup(dataDir: string, afterMs: number): Promise<void> {
  const child = spawn(process.execPath, [join(repoRoot, "bin/amctl.mjs"), "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  await Promise.race([sleep(afterMs), exited]);
  child.kill("SIGKILL");
  await exited;
}

describe("durability under kill -9", () => {
  // Twenty server starts and kills: about two minutes alone, several on a loaded 2-core machine.
  it(`${CYCLES} cycles of burst + SIGKILL + restart lose no acknowledged submit and no received event`, { timeout: 420_000 }, async () => {
    const random = seededRandom(SEED);
    const dataDir = tempDir("amctl-durability-");
    const violations: string[] = [];
    const fail = (cycle: number, text: string): void => {
      if (violations.length < 50) violations.push(`cycle ${cycle}: ${text}`);
    };

    /** Every acknowledged submit, by request id. */
    const acks = new Map<string, Ack>();
    /** Acknowledged in the cycle that was just killed: checked through the API after the restart. */
    let killedCycleAcks: Ack[] = [];
    /** Operations that were not terminal in the file right after the kill, and the latest sequence then. */
    let interrupted: Operation[] = [];
    let latestAtKill = 0n;
    /** Submits that got no answer because of the kill: in doubt until a retry tells. */
    let inDoubt: SubmitOperationRequest[] = [];
    /** Request id → operation name, as in the file right after the kill. */
    let crashedRequestIds = new Map<string, string>();
    let inDoubtStored = 0;
    let inDoubtAbsent = 0;
    let startupKills = 0;
    let lost = 0;
    let restartCauses = 0;
    let killsWithRunningTasks = 0;
    let profileCreated = false;
    let watcher: EventWatcher | undefined;
    let token: string | undefined;
    const started = Date.now();

    const checkEventsInFile = (cycle: number, snapshot: StoreSnapshot, when: string): void => {
      const bySequence = new Map(snapshot.events.map((event) => [event.sequence, event]));
      for (const event of watcher?.events ?? []) {
        const stored = bySequence.get(event.sequence);
        if (stored === undefined) fail(cycle, `${when}: received event ${describeEvent(event)} is not in the file`);
        else if (!equals(OperationEventSchema, stored, event))
          fail(cycle, `${when}: received ${describeEvent(event)} but the file has ${describeEvent(stored)}`);
      }
    };
    const checkAcksInFile = (cycle: number, snapshot: StoreSnapshot, when: string): void => {
      for (const ack of acks.values()) {
        const stored = snapshot.operations.get(ack.name);
        if (stored === undefined || stored.requestId !== ack.request.requestId) {
          lost += 1;
          fail(cycle, `${when}: acknowledged ${ack.request.requestId} (${ack.name}, cycle ${ack.cycle}) is not in the file`);
        }
      }
    };

    for (let cycle = 0; cycle <= CYCLES; cycle += 1) {
      const server = await startChildServer([], { dataDir });
      const client = clientFor(server, (token ??= server.token));
      try {
        // 1. Every submit acknowledged before the kill is still served, and a retry of it is
        //    answered with the same operation, not a new one.
        await eachLimited(killedCycleAcks, 16, async (ack) => {
          try {
            const { operation } = await client.getOperation({ name: ack.name });
            if (operation?.requestId !== ack.request.requestId) fail(cycle, `${ack.name} has request id ${operation?.requestId}`);
            const again = await client.submitOperation(ack.request);
            if (again.created || again.operation?.name !== ack.name) {
              fail(
                cycle,
                `re-submit of ${ack.request.requestId} returned created=${again.created} ${again.operation?.name}, expected created=false ${ack.name}`,
              );
            }
          } catch (error) {
            lost += 1;
            fail(cycle, `acknowledged ${ack.request.requestId} (${ack.name}): ${ConnectError.from(error).message}`);
          }
        });

        // 1b. A submit left in doubt by the kill is retried, as a client would: the answer must
        //     agree with the file as the kill left it (stored: the same operation; not: created now).
        const retried: string[] = [];
        await eachLimited(inDoubt, 16, async (request) => {
          const inFile = crashedRequestIds.get(request.requestId);
          try {
            const { operation, created } = await client.submitOperation(request);
            if (inFile !== undefined && (created || operation!.name !== inFile))
              fail(cycle, `in-doubt ${request.requestId} was stored as ${inFile}, but its retry returned created=${created} ${operation!.name}`);
            if (inFile === undefined && !created)
              fail(cycle, `in-doubt ${request.requestId} was not in the file, but its retry returned created=false ${operation!.name}`);
            if (inFile === undefined) inDoubtAbsent += 1;
            else inDoubtStored += 1;
            acks.set(request.requestId, { request, name: operation!.name, cycle });
            retried.push(operation!.name);
          } catch (error) {
            fail(cycle, `retry of in-doubt ${request.requestId}: ${ConnectError.from(error).message}`);
          }
        });

        // 2. Every task the kill interrupted ends; the ones that were running say why.
        const watchToEnd = async (name: string, why: string): Promise<OperationEvent[] | undefined> => {
          const events: OperationEvent[] = [];
          try {
            for await (const { event } of client.watchOperation({ name }, { timeoutMs: 30_000 })) events.push(event!);
          } catch (error) {
            fail(cycle, `watching ${name} (${why}): ${ConnectError.from(error).message}`);
            return undefined;
          }
          const { operation } = await client.getOperation({ name });
          if (!isTerminal(operation!.state)) fail(cycle, `${name} (${why}) is still ${TaskState[operation!.state]} after its watch ended`);
          return events;
        };
        await eachLimited(retried, 16, async (name) => void (await watchToEnd(name, "retried in-doubt submit")));
        await eachLimited(interrupted, 16, async (before) => {
          const events = await watchToEnd(before.name, `${TaskState[before.state]} at the kill`);
          if (events === undefined) return;
          if (before.state === TaskState.RUNNING) {
            const restart = events.find(
              (event) =>
                event.sequence > latestAtKill &&
                event.attempt === before.attempt &&
                (event.attributes.case === "retry" || event.attributes.case === "failure") &&
                event.attributes.value.cause?.reason === StopReason.SERVER_RESTART,
            );
            if (restart === undefined) {
              fail(
                cycle,
                `${before.name} was running attempt ${before.attempt} at the kill but has no retry/failure with cause server_restart: ${events.map(describeEvent).join("; ")}`,
              );
            } else {
              restartCauses += 1;
              const expected = before.attempt < RETRY.maxAttempts && before.spec?.kind.case === "executionStart" ? EventType.RETRY : EventType.FAILURE;
              if (restart.type !== expected)
                fail(cycle, `${before.name}: server_restart recorded as ${EventType[restart.type]}, expected ${EventType[expected]}`);
            }
          }
        });

        // 3. The file, read from outside next to the running server, now that everything settled.
        const settled = readStoreFile(dataDir);
        if (settled.integrity !== "ok") fail(cycle, `integrity_check after the restart: ${settled.integrity}`);
        checkAcksInFile(cycle, settled, "after the restart");
        checkEventsInFile(cycle, settled, "after the restart");
        violations.push(
          ...contiguityViolations(
            settled.events.map((event) => event.sequence),
            1n,
          ).map((v) => `cycle ${cycle}: ${v}`),
        );
        if (settled.events.length > 0 && settled.events[settled.events.length - 1]!.sequence !== settled.latest) {
          fail(cycle, `the last event is #${settled.events[settled.events.length - 1]!.sequence} but sqlite_sequence says ${settled.latest}`);
        }
        violations.push(
          ...lifecycleViolations(settled.events, new Map([...settled.operations].map(([name, { operation }]) => [name, operation]))).map(
            (v) => `cycle ${cycle}: ${v}`,
          ),
        );
        for (const [name, { operation }] of settled.operations) {
          if (!isTerminal(operation.state)) fail(cycle, `${name} is still ${TaskState[operation.state]} after recovery settled`);
        }
        // The subscriber's record, across all its connections, is 1..n without a gap, and each
        // resumed connection began right after the sequence it resumed from.
        if (watcher !== undefined) {
          const sequences = watcher.events.map((event) => event.sequence);
          violations.push(...contiguityViolations(sequences, 1n).map((v) => `cycle ${cycle}: subscriber: ${v}`));
          watcher.segments.forEach((segment, index) => {
            const first = watcher!.received.find((item) => item.segment === index && item.kind === "event");
            if (first?.kind === "event" && first.event.sequence !== segment.after + 1n) {
              fail(cycle, `subscriber connection ${index} resumed after ${segment.after} but began with #${first.event.sequence}`);
            }
          });
        }
        expect(violations, violations.join("\n")).toEqual([]);

        if (cycle === CYCLES) {
          // The last restart: every acknowledged submit of every cycle, through the API.
          await eachLimited([...acks.values()], 16, async (ack) => {
            const again = await client.submitOperation(ack.request).catch((error: unknown) => ConnectError.from(error));
            if (again instanceof ConnectError || again.created || again.operation?.name !== ack.name) {
              lost += 1;
              fail(
                cycle,
                `final re-submit of ${ack.request.requestId}: ${again instanceof ConnectError ? again.message : `created=${again.created} ${again.operation?.name}`}`,
              );
            }
          });
          expect(violations, violations.join("\n")).toEqual([]);
          server.child.kill("SIGTERM");
          expect(await server.exited).toBe(0);
          break;
        }

        if (!profileCreated) {
          const request = create(SubmitOperationRequestSchema, {
            requestId: `dur-${SEED}-profile`,
            spec: { kind: { case: "profileCreate", value: { profileId: "durable", profileType: ProfileType.PERSONAL } } },
          });
          const { operation } = await client.submitOperation(request);
          acks.set(request.requestId, { request, name: operation!.name, cycle });
          for await (const { event } of client.watchOperation({ name: operation!.name }, { timeoutMs: 10_000 })) {
            if (event !== undefined && isTerminal(event.state) && event.state !== TaskState.COMPLETED)
              throw new Error(`profile create ended ${TaskState[event.state]}`);
          }
          profileCreated = true;
        }

        // 4. The subscriber resumes from the last sequence it saw and catches up first.
        watcher ??= new EventWatcher(client, "subscriber");
        watcher.useClient(client);
        watcher.resume();
        await watcher.caughtUp(storeLatestSequence(dataDir), 15_000);

        // 5. The burst, and the kill in the middle of it.
        const concurrency = 20 + Math.floor(random() * 31);
        const killAfterMs = 20 + Math.floor(random() * 400);
        const cycleAcks: Ack[] = [];
        let killed = false;
        let index = 0;
        const sent: SubmitOperationRequest[] = [];
        const unanswered: SubmitOperationRequest[] = [];
        const kill = (): void => {
          if (killed) return;
          killed = true;
          server.child.kill("SIGKILL");
        };
        const killTimer = setTimeout(kill, killAfterMs);
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (!killed && index < MAX_SUBMITS_PER_CYCLE) {
              // One submit in ten repeats one already sent this cycle, possibly still in flight.
              const request = sent.length > 0 && random() < 0.1 ? sent[Math.floor(random() * sent.length)]! : makeRequest(cycle, index++, random);
              sent.push(request);
              try {
                const { operation } = await client.submitOperation(request);
                const earlier = acks.get(request.requestId);
                if (earlier !== undefined && earlier.name !== operation!.name)
                  fail(cycle, `${request.requestId} was acknowledged as ${earlier.name} and as ${operation!.name}`);
                const ack = { request, name: operation!.name, cycle };
                if (earlier === undefined) {
                  acks.set(request.requestId, ack);
                  cycleAcks.push(ack);
                }
              } catch (error) {
                // After the kill a submit may fail; it was not acknowledged, so it may or may not exist.
                if (!killed) fail(cycle, `submit ${request.requestId} failed before the kill: ${ConnectError.from(error).message}`);
                else unanswered.push(request);
              }
            }
          }),
        );
        clearTimeout(killTimer);
        kill();
        expect(await server.exited).toBe("SIGKILL");
        await watcher.ended();
        killedCycleAcks = cycleAcks;

        // 6. Right after the kill, before anything touches the file again.
        const crashed = readStoreFile(dataDir);
        if (crashed.integrity !== "ok") fail(cycle, `integrity_check after the kill: ${crashed.integrity}`);
        checkAcksInFile(cycle, crashed, "after the kill");
        checkEventsInFile(cycle, crashed, "after the kill");
        interrupted = [...crashed.operations.values()].map(({ operation }) => operation).filter((operation) => !isTerminal(operation.state));
        if (interrupted.some((operation) => operation.state === TaskState.RUNNING)) killsWithRunningTasks += 1;
        latestAtKill = crashed.latest;
        crashedRequestIds = new Map([...crashed.operations].map(([name, { requestId }]) => [requestId, name]));
        inDoubt = [...new Map(unanswered.filter((request) => !acks.has(request.requestId)).map((request) => [request.requestId, request])).values()];

        // 7. Now and then, a second kill in the middle of the next start-up (and its recovery).
        if (random() < 0.25) {
          await killDuringStartup(dataDir, 200 + Math.floor(random() * 1300));
          startupKills += 1;
          const again = readStoreFile(dataDir);
          if (again.integrity !== "ok") fail(cycle, `integrity_check after a kill during start-up: ${again.integrity}`);
          checkAcksInFile(cycle, again, "after a kill during start-up");
          checkEventsInFile(cycle, again, "after a kill during start-up");
        }
        expect(violations, violations.join("\n")).toEqual([]);
      } finally {
        if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
        await server.exited;
      }
    }

    const eventsChecked = watcher?.events.length ?? 0;
    console.log(
      `durability: ${CYCLES} cycles (seed ${SEED}), ${acks.size} acknowledged submits, ${lost} lost, ${eventsChecked} events checked, ` +
        `${restartCauses} server_restart causes, ${killsWithRunningTasks} kills with running tasks, ${startupKills} kills during start-up, ` +
        `in-doubt submits ${inDoubtStored} stored / ${inDoubtAbsent} not, ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    expect(lost).toBe(0);
    expect(acks.size).toBeGreaterThan(CYCLES);
    expect(eventsChecked).toBeGreaterThan(0);
    // The kills must have caught tasks mid-run, or the recovery checks checked nothing.
    expect(restartCauses).toBeGreaterThan(0);
  });
});
