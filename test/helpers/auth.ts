// Test authority: an operator key pair as `amctl init` writes it (the public key in the
// server's data dir, so the server trusts it; the private key outside it, in the per-user place)
// and root credentials minted with it (as `amctl delegation root`).
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { monotonicFactory } from "ulid";
import { DelegationScopeSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import type { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { bearerInterceptor } from "../../src/governance/bearer.js";
import { signCredential, type SigningKey } from "../../src/governance/credentials.js";
import { createOperatorKey, defaultPrivateKeyFile, operatorKeyFiles, readOperatorSigningKey } from "../../src/governance/operator-key.js";

// Tests and benchmarks keep operator private keys where `amctl init` puts them, but under a
// temporary per-user place of their own: AMCTL_CONFIG_DIR, set here for this process and the
// `amctl` children it starts (they inherit it), so that `amctl init` and `amctl delegation root
// --data-dir` in tests and examples agree with these helpers and never touch ~/.config.
process.env.AMCTL_CONFIG_DIR ||= mkdtempSync(join(tmpdir(), "amctl-config-"));

/** Where the operator private key of a data dir is (outside it, as `amctl init` puts it). */
export function operatorPrivateKeyFile(dataDir: string): string {
  return defaultPrivateKeyFile(dataDir);
}

/** The operator key of a data dir, created on first use. */
export async function operatorOf(dataDir: string): Promise<SigningKey> {
  const privateKey = operatorPrivateKeyFile(dataDir);
  if (!existsSync(operatorKeyFiles(dataDir).publicKey)) createOperatorKey(dataDir, privateKey);
  return readOperatorSigningKey(privateKey);
}

/**
 * Gives the data dir `to` a copy of the operator key of `from`, as replicas of one deployment
 * share it: each then trusts the same roots, and a root credential minted for one is valid on all.
 */
export function copyOperatorKey(from: string, to: string): void {
  cpSync(dirname(operatorKeyFiles(from).publicKey), dirname(operatorKeyFiles(to).publicKey), { recursive: true });
  const privateKey = operatorPrivateKeyFile(to);
  mkdirSync(dirname(privateKey), { recursive: true, mode: 0o700 });
  copyFileSync(operatorPrivateKeyFile(from), privateKey);
}

/** Everything: all operation types, profiles, tools and providers, a large budget, may delegate. */
export const fullScope: MessageInitShape<typeof DelegationScopeSchema> = {
  operationTypes: [1, 2, 3, 4, 5, 6, 7, 8] as OperationType[],
  profiles: ["*"],
  tools: ["*"],
  modelProviders: ["*"],
  budget: {
    modelCalls: 1n << 40n,
    tokens: 1n << 40n,
    connectorCalls: 1n << 40n,
    cpuGpuComputeSeconds: 1n << 40n,
    localDiskBytes: 1n << 40n,
    sandboxMemoryBytes: 1n << 40n,
    wallClockSeconds: 1n << 40n,
    agentConcurrency: 1000n,
  },
  mayDelegate: true,
  workerProfiles: ["*"],
  auditRead: true,
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

/** A client interceptor that sends `token` (the server's own wire format, src/governance/bearer.ts). */
export const bearer = bearerInterceptor;

/** The request header that carries a credential, for raw HTTP clients (node's http, http2). */
export function authorizationHeader(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` };
}

/**
 * The bytes the `authorization: Bearer <token>` header adds to a request on the wire, for tests
 * that count bytes. HTTP/1.1 sends it as text: its line. HTTP/2 (node's http2, nghttp2) sends it
 * with HPACK on every request as a literal that is never indexed (nghttp2 does so for
 * authorization): the name as static table index 23, then the value's length and the value,
 * Huffman-coded when that is shorter (RFC 7541 §5.1, §5.2, §6.2.3).
 */
export function credentialHeaderBytes(token: string, httpVersion: "1.1" | "2"): number {
  const value = `Bearer ${token}`;
  if (httpVersion === "1.1") return Buffer.byteLength(`authorization: ${value}\r\n`);
  const huffman = Math.ceil([...value].reduce((bits, char) => bits + huffmanBits(char), 0) / 8);
  const length = Math.min(huffman, value.length);
  return hpackIntegerBytes(23, 4) + hpackIntegerBytes(length, 7) + length;
}

/** RFC 7541 §5.1: the bytes of an integer with an N-bit prefix. */
function hpackIntegerBytes(value: number, prefixBits: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) return 1;
  let bytes = 2;
  for (let rest = value - max; rest >= 128; rest = Math.floor(rest / 128)) bytes += 1;
  return bytes;
}

/** Lengths of the HPACK Huffman codes (RFC 7541 Appendix B) of the characters a bearer credential may hold. */
const HUFFMAN_BITS: Record<number, string> = {
  5: "012aceiost",
  6: " %-./3456789=A_bdfghlmnpru",
  7: ":BCDEFGHIJKLMNOPQRSTUVWYjkqvwxyz",
  8: "XZ",
  11: "+",
  13: "~",
};

function huffmanBits(char: string): number {
  for (const [bits, chars] of Object.entries(HUFFMAN_BITS)) if (chars.includes(char)) return Number(bits);
  throw new Error(`no Huffman code length here for ${JSON.stringify(char)}: not a bearer credential character`);
}
