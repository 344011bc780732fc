// Cheap record operations for the benchmarks: tool_grant.apply in one profile, which the server
// runs at once (no process, no execution slot). Each one commits three durable writes and two
// events (start, complete), so the event sequence of a quiet server is known in advance.
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OperationService, SubmitOperationRequestSchema, type SubmitOperationRequest } from "../src/gen/agentmachine/v1/operation_service_pb.js";
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

export function recordRequest(profile: string, requestId: string): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, { requestId, profile, spec: { spec: { case: "toolGrantApply", value: { tool: "git" } } } });
}

/**
 * Creates a profile and waits for its operation to complete. Returns the profile's name and the
 * newest event sequence after it (on a server nobody else writes to).
 */
export async function createBenchProfile(client: OperationsClient, profileId = "bench"): Promise<{ profile: string; head: bigint }> {
  const { operation } = await client.submitOperation({
    requestId: requestIds("bench-profile")(),
    spec: { spec: { case: "profileCreate", value: { profileId, profileType: ProfileType.PERSONAL } } },
  });
  let head = 0n;
  for await (const { event } of client.watchOperation({ name: operation!.name }, { timeoutMs: 30_000 })) head = event!.sequence;
  const { operation: done } = await client.getOperation({ name: operation!.name });
  if (done!.state !== TaskState.COMPLETED) throw new Error(`creating ${operation!.profile} ended in ${TaskState[done!.state]}`);
  return { profile: operation!.profile, head };
}

/**
 * Submits `total` record operations, `concurrency` at a time, over the client's one connection.
 * Resolves when every submit is answered (the operations may still be running).
 */
export async function submitRecords(client: OperationsClient, profile: string, total: number, concurrency: number, onProgress?: (done: number) => void): Promise<void> {
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
  for await (const response of client.watchEvents({ afterSequence: sequence - 1n }, { timeoutMs })) {
    if (response.kind.case !== "event") continue;
    if (response.kind.value.sequence !== sequence) throw new Error(`expected event ${sequence} next, got ${response.kind.value.sequence}: did something else write events?`);
    return;
  }
  throw new Error(`WatchEvents ended before event ${sequence}`);
}
