// Test authority: an operator key pair in the server's data dir (as `amctl init` writes it,
// so the server trusts it) and root credentials minted with it (as `amctl delegation root`).
import { existsSync } from "node:fs";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { monotonicFactory } from "ulid";
import { DelegationScopeSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import type { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { signCredential, type SigningKey } from "../../src/governance/credentials.js";
import { createOperatorKey, operatorKeyFiles, readOperatorSigningKey } from "../../src/governance/operator-key.js";

/** The operator key of a data dir, created on first use. */
export async function operatorOf(dataDir: string): Promise<SigningKey> {
  const files = operatorKeyFiles(dataDir);
  if (!existsSync(files.privateKey)) createOperatorKey(dataDir);
  return readOperatorSigningKey(files.privateKey);
}

/** Everything: all operation types, profiles, tools and providers, a large budget, may delegate. */
export const fullScope: MessageInitShape<typeof DelegationScopeSchema> = {
  operationTypes: [1, 2, 3, 4, 5, 6, 7, 8] as OperationType[],
  profiles: ["*"],
  tools: ["*"],
  modelProviders: ["*"],
  budget: {
    modelCalls: 1_000_000n,
    tokens: 1_000_000_000n,
    connectorCalls: 1_000_000n,
    cpuGpuComputeSeconds: 1_000_000n,
    localDiskBytes: 1n << 40n,
    sandboxMemoryBytes: 1n << 40n,
    wallClockSeconds: 1_000_000n,
    agentConcurrency: 1000n,
  },
  mayDelegate: true,
};

const nextId = monotonicFactory();

export interface RootOptions {
  scope?: MessageInitShape<typeof DelegationScopeSchema>;
  subject?: string;
  notBefore?: Date;
  expires?: Date;
}

export async function mintRoot(operator: SigningKey, options: RootOptions = {}): Promise<string> {
  return signCredential(operator, {
    id: nextId(),
    subject: options.subject ?? "test-operator",
    scope: create(DelegationScopeSchema, options.scope ?? fullScope),
    notBefore: options.notBefore ?? new Date(Date.now() - 1000),
    expires: options.expires ?? new Date(Date.now() + 3600_000),
  });
}

export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
