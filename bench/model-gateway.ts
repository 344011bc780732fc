// The model-gateway benchmark: OpenAI chat completions sent to a local stand-in provider
// (test/helpers/stand-in-provider.ts, in this process) directly vs through the server's model
// gateway (a separate `amctl serve` process, the provider bound with its key as an
// `env:AMCTL_PROVIDER_…` reference), alternately, in one run:
//
//   throughput  one streamed completion of STREAM_WORDS tokens at a time: tokens/s received
//               by the client each way, and the ratio gateway / direct (goal ≥ 0.9); and the
//               server's CPU time per streamed completion, which the machine's load moves less
//               than the rates (each a median of STREAM_ROUNDS rounds, since on a shared machine
//               one stream's rate can halve from one second to the next)
//   latency     one small whole completion at a time: p50 and p99 each way, and what the
//               gateway adds (authentication, the decision, two store commits — the charge at
//               the request and the settlement with the audit record — and the extra hop)
//
// Through the gateway each call is a real governed call of a running execution: decided by the
// modelProviderUse gate of the default bundles, charged to its budget, audited.
import { create } from "@bufbuild/protobuf";
import { ModelProviderApi } from "../src/gen/agentmachine/v1/operation_pb.js";
import { ProfileType } from "../src/gen/agentmachine/v1/types_pb.js";
import { startStandInProvider } from "../test/helpers/stand-in-provider.js";
import { SubmitOperationRequestSchema } from "../src/gen/agentmachine/v1/operation_service_pb.js";
import { cancelExecution, startExecution } from "./executions.js";
import { fixed, ms, type SectionReport } from "./format.js";
import { cpuSeconds, startServerProcess, stopServerProcess } from "./processes.js";
import { completeOperation, createBenchProfile, operationsClient, requestIds } from "./records.js";
import { percentile, ratio } from "./stats.js";

const KEY_VAR = "AMCTL_PROVIDER_BENCH_KEY";
/** An OpenAI-compatible local runtime the default local_model_provider bundle allows. */
const PROVIDER = "vllm";
const STREAM_WORDS = 40_000;
const STREAM_ROUNDS = 12;
const LATENCY_SAMPLES = 200;
const SMALL_WORDS = 5;

interface Target {
  url: string;
  key: string;
}

const request = (stream: boolean) => JSON.stringify({ model: "bench-model", messages: [{ role: "user", content: "hi" }], stream });

/** Streams one completion and answers the tokens it carried (one per content event) and the seconds it took. */
async function streamOnce(target: Target): Promise<{ tokens: number; seconds: number }> {
  const started = performance.now();
  const response = await fetch(`${target.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${target.key}` },
    body: request(true),
  });
  if (!response.ok || response.body === null) throw new Error(`stream answered ${response.status}: ${await response.text()}`);
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of response.body) text += decoder.decode(chunk as Uint8Array, { stream: true });
  const seconds = (performance.now() - started) / 1000;
  const tokens = text.split('"content":"tok "').length - 1;
  if (tokens !== STREAM_WORDS) throw new Error(`the stream carried ${tokens} tokens, not ${STREAM_WORDS}`);
  return { tokens, seconds };
}

async function callOnce(target: Target): Promise<number> {
  const started = performance.now();
  const response = await fetch(`${target.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${target.key}` },
    body: request(false),
  });
  const body = await response.text();
  if (!response.ok) throw new Error(`call answered ${response.status}: ${body}`);
  return performance.now() - started;
}

export async function modelGatewayBenchmark(): Promise<SectionReport> {
  const key = `bench-provider-key-${Date.now()}`;
  const provider = await startStandInProvider({ words: STREAM_WORDS });
  try {
    const server = await startServerProcess({ env: { [KEY_VAR]: key } });
    try {
      const client = operationsClient(server);
      const { profile } = await createBenchProfile(client);
      const nextId = requestIds("bench-models");
      const models = (
        await completeOperation(
          client,
          create(SubmitOperationRequestSchema, {
            requestId: nextId(),
            spec: { kind: { case: "profileCreate", value: { profileId: "bench-models", profileType: ProfileType.LOCAL_MODEL_PROVIDER } } },
          }),
        )
      ).operation.profile;
      await completeOperation(
        client,
        create(SubmitOperationRequestSchema, {
          requestId: nextId(),
          profile: models,
          spec: {
            kind: {
              case: "modelProviderBind",
              value: { provider: PROVIDER, api: ModelProviderApi.OPENAI, endpoint: `${provider.url}/v1`, apiKeyRef: `env:${KEY_VAR}` },
            },
          },
        }),
      );
      const execution = await startExecution(client, server, profile);
      try {
        const direct: Target = { url: `${provider.url}/v1`, key };
        const gateway: Target = { url: `${server.url}/v1`, key: execution.token };
        // Warm-up, both ways.
        await streamOnce(direct);
        await streamOnce(gateway);
        const rates = { direct: [] as number[], gateway: [] as number[] };
        let serverCpuSeconds = 0;
        for (let round = 0; round < STREAM_ROUNDS; round += 1) {
          // Both ways each round, which goes first taking turns, so neither is always the one
          // that runs right after the other.
          const ways = [
            ["direct", direct],
            ["gateway", gateway],
          ] as const;
          for (const [name, target] of round % 2 === 0 ? ways : [...ways].reverse()) {
            const cpuBefore = cpuSeconds(server.pid);
            const { tokens, seconds } = await streamOnce(target);
            if (name === "gateway") serverCpuSeconds += cpuSeconds(server.pid) - cpuBefore;
            rates[name].push(tokens / seconds);
          }
        }
        const serverCpuMsPerStream = (serverCpuSeconds * 1000) / STREAM_ROUNDS;
        provider.options.words = SMALL_WORDS;
        const latencies = { direct: [] as number[], gateway: [] as number[] };
        for (let i = 0; i < LATENCY_SAMPLES; i += 1) {
          if (i % 2 === 1) latencies.gateway.push(await callOnce(gateway));
          latencies.direct.push(await callOnce(direct));
          if (i % 2 === 0) latencies.gateway.push(await callOnce(gateway));
        }
        const tokensPerSecond = { direct: percentile(rates.direct, 50), gateway: percentile(rates.gateway, 50) };
        const p = (name: "direct" | "gateway", q: number) => percentile(latencies[name], q);
        const added = { p50Ms: p("gateway", 50) - p("direct", 50), p99Ms: p("gateway", 99) - p("direct", 99) };
        const throughputRatio = ratio(tokensPerSecond.gateway, tokensPerSecond.direct);
        return {
          name: "model-gateway",
          lines: [
            `streamed completions of ${STREAM_WORDS} tokens, ${STREAM_ROUNDS} rounds each way, alternating (median tokens/s); ${LATENCY_SAMPLES} small whole completions each way, one at a time`,
            `  direct    ${fixed(tokensPerSecond.direct, 0)} tokens/s   p50 ${ms(p("direct", 50))} ms   p99 ${ms(p("direct", 99))} ms`,
            `  gateway   ${fixed(tokensPerSecond.gateway, 0)} tokens/s   p50 ${ms(p("gateway", 50))} ms   p99 ${ms(p("gateway", 99))} ms`,
            `  throughput ratio gateway / direct: ${fixed(throughputRatio)} (goal ≥ 0.9)`,
            `  server CPU per streamed completion through the gateway: ${ms(serverCpuMsPerStream)} ms`,
            `  latency the gateway adds per call: p50 ${ms(added.p50Ms)} ms, p99 ${ms(added.p99Ms)} ms`,
          ],
          data: {
            streamWords: STREAM_WORDS,
            tokensPerSecond,
            throughputRatio,
            serverCpuMsPerStream,
            latencyMs: { direct: { p50: p("direct", 50), p99: p("direct", 99) }, gateway: { p50: p("gateway", 50), p99: p("gateway", 99) } },
            addedMs: added,
          },
        };
      } finally {
        await cancelExecution(client, execution);
      }
    } finally {
      await stopServerProcess(server);
    }
  } finally {
    await provider.close();
  }
}
