// Cheap record operations for the benchmarks: tool_grant.apply in one profile (and
// profile.create), which the server runs at once (no process, no execution slot). Each one
// commits three durable writes and two events (start, complete), so the event sequence of a
// quiet server is known in advance. Also the tool call that the governance benchmark asks about.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Operation } from "../src/gen/agentmachine/v1/operation_pb.js";
import { OperationService, SubmitOperationRequestSchema, type SubmitOperationRequest } from "../src/gen/agentmachine/v1/operation_service_pb.js";
import { CallKind, RuntimeCallSchema, type RuntimeCall } from "../src/gen/agentmachine/v1/runtime_pb.js";
import { ProfileType, TaskState } from "../src/gen/agentmachine/v1/types_pb.js";
import { credentialInterceptors } from "./credentials.js";
import type { Endpoint } from "./processes.js";

export type OperationsClient = Client<typeof OperationService>;

/** Events a record operation adds to the store: start and complete. */
export const EVENTS_PER_RECORD = 2;

export function operationsClient(server: Endpoint): OperationsClient {
  return createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: credentialInterceptors(server.token) }));
}

/** Request ids unique to this process and start, whatever else the server has seen. */
export function requestIds(prefix: string): () => string {
  const base = `${prefix}-${process.pid}-${Date.now().toString(36)}`;
  let next = 0;
  return () => `${base}-${++next}`;
}

/**
 * The tool the bench grants and calls. The personal bundle of examples/policies allows it
 * (rule personal.dev-tools), so its grants and calls pass the toolGrant gate.
 */
export const BENCH_TOOL = "git";

export function recordRequest(profile: string, requestId: string): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, { requestId, profile, spec: { kind: { case: "toolGrantApply", value: { tool: BENCH_TOOL } } } });
}

/**
 * profile.create of a personal profile. Profile ids are lowercase, which `requestIds` are
 * (base 36), so a fresh request id doubles as a fresh profile id.
 */
export function profileRequest(requestId: string, profileId = requestId): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, {
    requestId,
    spec: { kind: { case: "profileCreate", value: { profileId, profileType: ProfileType.PERSONAL } } },
  });
}

/** A runtime use of BENCH_TOOL, as an execution would ask for it. */
export function toolCall(): RuntimeCall {
  return create(RuntimeCallSchema, { kind: CallKind.TOOL, tool: BENCH_TOOL });
}

/** Waits until an operation has ended. Returns it as stored and the sequence of its last event. */
export async function waitForEnd(client: OperationsClient, name: string, timeoutMs = 30_000): Promise<{ operation: Operation; head: bigint }> {
  let head = 0n;
  // The stream ends after the operation's terminal event.
  for await (const { event } of client.watchOperation({ name }, { timeoutMs })) head = event!.sequence;
  const { operation } = await client.getOperation({ name });
  return { operation: operation!, head };
}

/**
 * Submits an operation and waits for it to complete. Returns it and the newest event sequence
 * after it (on a server nobody else writes to).
 */
export async function completeOperation(client: OperationsClient, request: SubmitOperationRequest): Promise<{ operation: Operation; head: bigint }> {
  const { operation: submitted } = await client.submitOperation(request);
  const done = await waitForEnd(client, submitted!.name);
  if (done.operation.state !== TaskState.COMPLETED) throw new Error(`${submitted!.name} in ${submitted!.profile} ended in ${TaskState[done.operation.state]}`);
  return done;
}

/**
 * Creates a profile and waits for its operation to complete. Returns the profile's name and the
 * newest event sequence after it (on a server nobody else writes to).
 */
export async function createBenchProfile(client: OperationsClient, profileId = "bench"): Promise<{ profile: string; head: bigint }> {
  const { operation, head } = await completeOperation(client, profileRequest(requestIds("bench-profile")(), profileId));
  return { profile: operation.profile, head };
}

/** Applies a grant of BENCH_TOOL in `profile` and waits until it is in force (completed). */
export async function grantBenchTool(client: OperationsClient, profile: string): Promise<void> {
  await completeOperation(client, recordRequest(profile, requestIds("bench-grant")()));
}

/**
 * Submits `total` record operations, `concurrency` at a time, over the client's one connection.
 * Resolves when every submit is answered (the operations may still be running).
 */
export async function submitRecords(
  client: OperationsClient,
  profile: string,
  total: number,
  concurrency: number,
  onProgress?: (done: number) => void,
): Promise<void> {
  const nextId = requestIds("bench-record");
  let started = 0;
  let done = 0;
  const loop = async (): Promise<void> => {
    while (started < total) {
      started++;
      const { created } = await client.submitOperation(recordRequest(profile, nextId()));
      if (!created) throw new Error("a fresh request_id was answered as a retry");
      done++;
      if (onProgress && done % 5000 === 0) onProgress(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, loop));
}

/** Waits until the event with `sequence` is committed (on a server whose sequence only grows by our writes). */
export async function waitForSequence(client: OperationsClient, sequence: bigint, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      for await (const response of client.watchEvents({ afterSequence: sequence - 1n }, { timeoutMs: deadline - Date.now() })) {
        if (response.kind.case !== "event") continue;
        if (response.kind.value.sequence !== sequence)
          throw new Error(`expected event ${sequence} next, got ${response.kind.value.sequence}: did something else write events?`);
        return;
      }
      throw new Error(`WatchEvents ended before event ${sequence}`);
    } catch (error) {
      // A submit is answered before its operation's last event commits: until then the cursor is
      // beyond the newest event, which the server refuses (OutOfRange). Ask again shortly.
      if (!(error instanceof ConnectError && error.code === Code.OutOfRange) || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
