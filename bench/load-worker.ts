// One load generator process, started by bench/run.ts (`node --import tsx bench/load-worker.ts`).
// It opens ONE HTTP/2 connection (one connect-node transport) to the server, keeps
// `--concurrency` calls in flight on it, and prints exactly one JSON line on stdout:
//
//   1. sanity call (opens the connection and checks the answer), then `{"ready":true}`;
//   2. waits for a line "go" on stdin (so all workers of a run start together), unless
//      --no-wait is given;
//   3. runs --warmup seconds unmeasured, then --seconds measured, then stops issuing calls,
//      lets the calls in flight finish and prints the result line (see WorkerResult).
//
// Only calls that complete inside the measured window count; each one contributes its latency
// (start to response, in whole microseconds). Failed calls are counted by error code.
//
// Run alone (against a server you started):
//   node --import tsx bench/load-worker.ts --url http://127.0.0.1:7070 --protocol grpc \
//     --method validate --concurrency 8 --seconds 3 --no-wait
// `--method submit` submits record operations (tool_grant.apply, each with a fresh request_id)
// in the existing profile given by `--profile profiles/ID`; `--method submit-profile` submits
// profile.create, a new profile each call. `--method evaluate` asks EvaluatePolicy about a tool
// call in `--profile`; `--method authorize` asks AuthorizeCall for the same call as the running
// execution `--operation operations/ID`, whose execution credential must be in BENCH_BEARER_TOKEN.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ContractService, ValidateContractRequestSchema } from "../src/gen/agentmachine/v1/contract_service_pb.js";
import { OperationService } from "../src/gen/agentmachine/v1/operation_service_pb.js";
import { EvaluatePolicyRequestSchema, PolicyService } from "../src/gen/agentmachine/v1/policy_service_pb.js";
import { AuthorizeCallRequestSchema, RuntimeService } from "../src/gen/agentmachine/v1/runtime_service_pb.js";
import { Health, HealthCheckRequestSchema, HealthCheckResponse_ServingStatus } from "../src/gen/grpc/health/v1/health_pb.js";
import { credentialInterceptors, workerToken } from "./credentials.js";
import { profileRequest, recordRequest, requestIds, toolCall } from "./records.js";

export type BenchProtocol = "grpc" | "connect";
/**
 * `health`: grpc.health.v1.Health/Check (the baseline). `validate`: ContractService/ValidateContract.
 * `submit`: OperationService/SubmitOperation of a record operation (needs `--profile`).
 * `submit-profile`: SubmitOperation of profile.create. `evaluate`: PolicyService/EvaluatePolicy
 * of a tool call (needs `--profile`). `authorize`: RuntimeService/AuthorizeCall of a tool call
 * (needs `--operation` and that execution's credential).
 */
export type BenchMethod = "health" | "validate" | "submit" | "submit-profile" | "evaluate" | "authorize";
const methods: readonly BenchMethod[] = ["health", "validate", "submit", "submit-profile", "evaluate", "authorize"];

// Only types are exported: importing a value from here would run the worker.
const exampleContractPath = join(import.meta.dirname, "..", "examples/contracts/local-execution.json");

export interface WorkerResult {
  protocol: BenchProtocol;
  method: BenchMethod;
  concurrency: number;
  /** Length of the measured window, seconds. */
  seconds: number;
  /** Successful calls completed inside the window (= latenciesUs.length). */
  calls: number;
  /** Failed calls completed inside the window. */
  errors: number;
  /** Failed calls by Connect code name (whole run, warm-up included). */
  errorCodes: Record<string, number>;
  /** This process's CPU time during the window as a share of one core (1 = one core busy). */
  cpu: number;
  /** Latency of every successful call in the window, microseconds, in completion order. */
  latenciesUs: number[];
}

interface Options {
  url: string;
  protocol: BenchProtocol;
  method: BenchMethod;
  concurrency: number;
  warmupSeconds: number;
  seconds: number;
  wait: boolean;
  documentPath: string;
  profile: string;
  operation: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" },
      protocol: { type: "string", default: "grpc" },
      method: { type: "string", default: "health" },
      concurrency: { type: "string", default: "1" },
      warmup: { type: "string", default: "1" },
      seconds: { type: "string", default: "3" },
      "no-wait": { type: "boolean", default: false },
      document: { type: "string", default: exampleContractPath },
      profile: { type: "string", default: "" },
      operation: { type: "string", default: "" },
    },
    strict: true,
  });
  if (!values.url) throw new Error("--url is required");
  const url = new URL(values.url);
  // The benchmark never leaves this machine.
  if (url.protocol !== "http:" || url.hostname !== "127.0.0.1") throw new Error(`--url must be http://127.0.0.1:PORT, got ${values.url}`);
  if (values.protocol !== "grpc" && values.protocol !== "connect") throw new Error(`--protocol must be grpc or connect, got ${values.protocol}`);
  if (!methods.includes(values.method as BenchMethod)) throw new Error(`--method must be one of ${methods.join(", ")}, got ${values.method}`);
  if ((values.method === "submit" || values.method === "evaluate") && !values.profile) throw new Error(`--method ${values.method} needs --profile profiles/ID`);
  if (values.method === "authorize" && !values.operation) throw new Error("--method authorize needs --operation operations/ID");
  const concurrency = Number(values.concurrency);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new Error(`--concurrency must be a positive integer, got ${values.concurrency}`);
  const warmupSeconds = Number(values.warmup);
  const seconds = Number(values.seconds);
  if (!(warmupSeconds >= 0) || !(seconds > 0)) throw new Error("--warmup must be ≥ 0 and --seconds > 0");
  return {
    url: url.origin,
    protocol: values.protocol,
    method: values.method as BenchMethod,
    concurrency,
    warmupSeconds,
    seconds,
    wait: !values["no-wait"],
    documentPath: values.document,
    profile: values.profile,
    operation: values.operation,
  };
}

function transportFor(options: Options): Transport {
  // One transport = one Http2SessionManager = one HTTP/2 connection, shared by all calls.
  // Every call carries the bench's credential (BENCH_BEARER_TOKEN), Health's too, which ignores it.
  const interceptors = credentialInterceptors(workerToken());
  switch (options.protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl: options.url, interceptors });
    case "connect":
      return createConnectTransport({ baseUrl: options.url, httpVersion: "2", useBinaryFormat: true, interceptors });
  }
}

/** Returns a function making one call; it throws when the call fails or answers wrongly. */
function callFor(options: Options, transport: Transport): () => Promise<void> {
  switch (options.method) {
    case "health": {
      const client = createClient(Health, transport);
      const request = create(HealthCheckRequestSchema, { service: "" });
      return async () => {
        const response = await client.check(request);
        if (response.status !== HealthCheckResponse_ServingStatus.SERVING) throw new Error(`health status ${response.status}`);
      };
    }
    case "validate": {
      const client = createClient(ContractService, transport);
      const request = create(ValidateContractRequestSchema, {
        document: { case: "json", value: readFileSync(options.documentPath, "utf8") },
      });
      return async () => {
        const response = await client.validateContract(request);
        if (!response.valid) throw new Error(`document reported invalid: ${JSON.stringify(response.violations.slice(0, 3))}`);
      };
    }
    case "submit": {
      const client = createClient(OperationService, transport);
      const nextId = requestIds("bench-submit");
      return async () => {
        const response = await client.submitOperation(recordRequest(options.profile, nextId()));
        if (!response.created) throw new Error("a fresh request_id was answered as a retry");
      };
    }
    case "submit-profile": {
      const client = createClient(OperationService, transport);
      const nextId = requestIds("bench-new-profile");
      return async () => {
        const response = await client.submitOperation(profileRequest(nextId()));
        if (!response.created) throw new Error("a fresh request_id was answered as a retry");
      };
    }
    case "evaluate": {
      const client = createClient(PolicyService, transport);
      const request = create(EvaluatePolicyRequestSchema, { subject: { case: "call", value: { profile: options.profile, call: toolCall() } } });
      return async () => {
        const response = await client.evaluatePolicy(request);
        if (!response.allowed) throw new Error(`denied: ${response.denial?.message ?? ""}`);
      };
    }
    case "authorize": {
      const client = createClient(RuntimeService, transport);
      const request = create(AuthorizeCallRequestSchema, { operation: options.operation, call: toolCall() });
      return async () => {
        const response = await client.authorizeCall(request);
        if (!response.allowed) throw new Error(`denied: ${response.denialReason}`);
      };
    }
  }
}

function waitForGo(): Promise<void> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdin });
    lines.on("line", (line) => {
      if (line.trim() === "go") {
        resolve(); // before close(), whose "close" event would reject
        lines.close();
      }
    });
    lines.on("close", () => reject(new Error("stdin closed before go")));
  });
}

function errorCode(error: unknown): string {
  if (error instanceof ConnectError) return `connect:${error.code}`;
  return error instanceof Error ? error.message.slice(0, 80) : String(error);
}

async function run(options: Options): Promise<WorkerResult> {
  const transport = transportFor(options);
  const call = callFor(options, transport);
  // Sanity: fail fast, before any timing, if the call does not work at all.
  await call();
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  if (options.wait) await waitForGo();

  const start = performance.now();
  const windowStart = start + options.warmupSeconds * 1000;
  const windowEnd = windowStart + options.seconds * 1000;
  const latenciesUs: number[] = [];
  const errorCodes: Record<string, number> = {};
  let errors = 0;
  // CPU time of this process over the window, sampled by the loops as they cross its edges.
  let cpuAtStart: { usage: NodeJS.CpuUsage; at: number } | undefined;
  let cpuShare = NaN;

  const loop = async (): Promise<void> => {
    for (;;) {
      const began = performance.now();
      if (began >= windowStart && !cpuAtStart) cpuAtStart = { usage: process.cpuUsage(), at: began };
      if (began >= windowEnd) {
        if (cpuAtStart && Number.isNaN(cpuShare)) {
          const used = process.cpuUsage(cpuAtStart.usage);
          cpuShare = (used.user + used.system) / 1000 / (began - cpuAtStart.at);
        }
        return;
      }
      let failure: unknown;
      try {
        await call();
      } catch (error) {
        failure = error ?? new Error("unknown failure");
      }
      const ended = performance.now();
      if (failure !== undefined) {
        const code = errorCode(failure);
        errorCodes[code] = (errorCodes[code] ?? 0) + 1;
      }
      if (ended < windowStart || ended > windowEnd) continue;
      if (failure !== undefined) errors++;
      else latenciesUs.push(Math.round((ended - began) * 1000));
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, loop));

  return {
    protocol: options.protocol,
    method: options.method,
    concurrency: options.concurrency,
    seconds: options.seconds,
    calls: latenciesUs.length,
    errors,
    errorCodes,
    cpu: cpuShare,
    latenciesUs,
  };
}

try {
  const result = await run(parseOptions(process.argv.slice(2)));
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
} catch (error) {
  process.stderr.write(`load-worker: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
}
