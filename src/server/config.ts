// Server settings and their defaults, in one place. The CLI (`amctl serve`) fills this from
// flags; tests build it directly.
import { create } from "@bufbuild/protobuf";
import type { Level } from "pino";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";

export interface ServerConfig {
  /** Interface to bind; loopback by default so a fresh install is not reachable from the network. */
  host: string;
  /** TCP port; 0 picks a free one (the chosen address is logged). */
  port: number;
  /** Directory of the server's durable state. Created if missing. */
  dataDir: string;
  logLevel: Level;
  /** Largest request message accepted, per message, on every protocol. */
  maxMessageBytes: number;
  /** How long shutdown waits for open calls and streams before it closes connections. */
  shutdownGraceMs: number;
  /** Budget that bounds an execution when nothing smaller applies; published in GetContract. */
  defaultBudget: Budget;
}

export const defaultConfig: ServerConfig = {
  host: "127.0.0.1",
  port: 7070,
  dataDir: ".amctl",
  logLevel: "info",
  maxMessageBytes: 4 * 1024 * 1024,
  shutdownGraceMs: 8000,
  defaultBudget: create(BudgetSchema, {
    modelCalls: 200n,
    tokens: 160_000n,
    connectorCalls: 120n,
    cpuGpuComputeSeconds: 3600n,
    localDiskBytes: 20n * 1024n ** 3n,
    sandboxMemoryBytes: 8n * 1024n ** 3n,
    wallClockSeconds: 5400n,
    agentConcurrency: 2n,
  }),
};

/** Parses `host:port` (IPv6 as `[::1]:7070`). Throws a message naming the flag on bad input. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new Error(`--listen must be HOST:PORT (e.g. 127.0.0.1:7070), got "${text}"`);
  return { host: (match[1] ?? match[2]) as string, port };
}
