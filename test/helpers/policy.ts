// Helpers for tests of policy gates: a PolicyService client, bundles written as data, a
// credential that may change policy, and the newest event sequence as a client sees it.
import { createHash } from "node:crypto";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { stringify } from "yaml";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { PolicyService, type EvaluatePolicyResponse } from "../../src/gen/agentmachine/v1/policy_service_pb.js";
import { Code } from "../../src/gen/google/rpc/code_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import type { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { fullScope, mintRoot, operatorOf } from "./auth.js";
import type { OperationsClient } from "./operations.js";
import { authInterceptors } from "./tokens.js";
import { bearer } from "./auth.js";

export type PolicyClient = Client<typeof PolicyService>;

/**
 * A dry run's denial as a client reads its google.rpc.Status: the code's name
 * (`PERMISSION_DENIED`), the message, and the reason and metadata of its ErrorInfo; all empty
 * when allowed.
 */
export function denialOf(answer: EvaluatePolicyResponse): { code: string; message: string; reason: string; metadata: Record<string, string> } {
  const status = answer.denial;
  const info = status?.details.map((detail) => anyUnpack(detail, ErrorInfoSchema)).find((unpacked) => unpacked !== undefined);
  return {
    code: status === undefined ? "" : (Code[status.code] ?? String(status.code)),
    message: status?.message ?? "",
    reason: info?.reason ?? "",
    metadata: info?.metadata ?? {},
  };
}

/** A PolicyService client sending `token`, or the server's registered root credential. */
export function policyClient(baseUrl: string, token?: string): PolicyClient {
  const interceptors = token === undefined ? authInterceptors(baseUrl) : [bearer(token)];
  return createClient(PolicyService, createGrpcTransport({ baseUrl, interceptors }));
}

export interface RuleInit {
  id: string;
  gate: string;
  effect: string;
  when: string;
  description?: string;
}

/** A bundle's YAML source: a profile type (as the contract spells it) and its rules, in order. */
export function bundleSource(profileType: string, rules: RuleInit[]): string {
  return stringify({ profileType, rules });
}

/** SHA-256 of a bundle's source, lowercase hex: the digest every decision names. */
export function sha256(source: string): string {
  return createHash("sha256").update(source).digest("hex");
}

/** A root credential for the server on `dataDir` with the full scope that may also replace the bundles of `types`. */
export async function policyAdmin(dataDir: string, types: ProfileType[]): Promise<string> {
  return mintRoot(await operatorOf(dataDir), { scope: { ...fullScope, policyProfileTypes: types } });
}

/**
 * The newest event sequence, as a client sees it: the first bookmark of a WatchEvents stream
 * whose filter matches nothing (a bookmark is sent only once the stream has read every event).
 * Needs a server with a short bookmark interval.
 */
export async function latestSequence(client: OperationsClient): Promise<bigint> {
  const abort = new AbortController();
  try {
    for await (const { kind } of client.watchEvents({ filter: { labels: { "never-set": "never" } } }, { signal: abort.signal, timeoutMs: 10_000 })) {
      if (kind.case === "bookmark") return kind.value.sequence;
    }
  } finally {
    abort.abort();
  }
  throw new Error("WatchEvents ended without a bookmark");
}
