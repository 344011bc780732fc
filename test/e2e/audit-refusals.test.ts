// Unauthenticated refusals in the audit log, over real sockets: a flood of calls with a bad
// credential from one source leaves a bounded number of records — the first refusal of each
// source and reason at once, the rest summed into one record per interval that carries their
// count — and nothing of the count is lost at shutdown; sources beyond the cap are summed
// together; authenticated denials stay one record each; the log still verifies.
import { connect } from "node:net";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { parseVerifierKey } from "../../src/audit/signed-note.js";
import { verifyLog } from "../../src/audit/verify.js";
import type { AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { OperationService } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import type { ServerConfig } from "../../src/config/config.js";
import { bearer, fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { refusal } from "../helpers/runtime.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { allAuditRecords } from "../helpers/audit-records.js";

const FLOOD = 500;
const BAD_CREDENTIAL = "not-a-credential";
const LIST_OPERATIONS = "/agentmachine.v1.OperationService/ListOperations";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function serve(overrides: Partial<ServerConfig>): Promise<TestServer> {
  const server = await startTestServer({ auditCheckpointIntervalMs: 100, ...overrides });
  servers.push(server);
  return server;
}

function auditClient(server: TestServer): Client<typeof AuditService> {
  return createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
}

const allRecords = (server: TestServer): Promise<AuditRecord[]> => allAuditRecords(auditClient(server));

/** How many calls a record stands for. */
const calls = (record: AuditRecord): number => Math.max(Number(record.repeatCount ?? 0), 1);

const total = (records: AuditRecord[]): number => records.reduce((sum, record) => sum + calls(record), 0);

/** `count` calls with a bad credential, `parallel` at a time, from `localAddress` if given; each must be Unauthenticated. */
async function flood(server: TestServer, count: number, options: { parallel?: number; localAddress?: string } = {}): Promise<void> {
  const { localAddress } = options;
  const transport = createGrpcTransport({
    baseUrl: server.url,
    interceptors: [bearer(BAD_CREDENTIAL)],
    // From another loopback address: Linux routes all of 127.0.0.0/8 to this host.
    ...(localAddress
      ? { nodeOptions: { createConnection: (authority: URL) => connect({ host: authority.hostname, port: Number(authority.port), localAddress }) } }
      : {}),
  });
  const client = createClient(OperationService, transport);
  for (let sent = 0; sent < count; ) {
    const batch = Math.min(options.parallel ?? 50, count - sent);
    const codes = await Promise.all(Array.from({ length: batch }, async () => (await refusal(client.listOperations({}))).code));
    expect(new Set(codes)).toEqual(new Set([Code.Unauthenticated]));
    sent += batch;
  }
}

/** The same server's store served again: what a shutdown kept. */
async function restart(server: TestServer): Promise<TestServer> {
  await server.close();
  servers.splice(servers.indexOf(server), 1);
  return serve({ dataDir: server.dataDir });
}

const anonymousRecords = (records: AuditRecord[]) => records.filter((r) => r.principal === "anonymous");

describe("unauthenticated refusals", () => {
  it(`a flood of ${FLOOD} calls with a bad credential from one source leaves a few records that count all of them, kept across a shutdown; authenticated denials stay one record each`, async () => {
    let server = await serve({});
    const before = (await allRecords(server)).length;
    await flood(server, FLOOD);
    // At once: the first refusal, as a record of its own (the others are being summed).
    const during = anonymousRecords((await allRecords(server)).slice(before));
    expect(during.length).toBeLessThanOrEqual(2);
    expect(during[0]).toMatchObject({ rpc: LIST_OPERATIONS, sourceAddress: "127.0.0.1", decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED } });

    // Authenticated denials: one record each, at once.
    const noAudit = await mintRoot(await operatorOf(server.dataDir), { subject: "no-audit", scope: { ...fullScope, auditRead: false } });
    const denied = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(noAudit)] }));
    for (let i = 0; i < 5; i += 1) expect((await refusal(denied.listAuditRecords({}))).code).toBe(Code.PermissionDenied);
    const deniedRecords = (await allRecords(server)).filter((r) => r.principal === "no-audit");
    expect(deniedRecords).toHaveLength(5);
    for (const record of deniedRecords) expect(record).toMatchObject({ repeatCount: 0n, decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED } });

    // The sum of the rest is written at shutdown, and a checkpoint covers it.
    server = await restart(server);
    const records = await allRecords(server);
    const refusals = anonymousRecords(records.slice(before));
    expect(refusals.length).toBeLessThanOrEqual(4);
    expect(total(refusals)).toBe(FLOOD);
    const summaries = refusals.filter((r) => r.repeatCount > 0n);
    expect(summaries.length).toBeGreaterThanOrEqual(1);
    for (const summary of summaries) {
      expect(summary).toMatchObject({
        principal: "anonymous",
        rpc: LIST_OPERATIONS,
        sourceAddress: "127.0.0.1",
        decision: { allowed: false, denialCode: RpcCode.UNAUTHENTICATED },
      });
      expect(summary.lastTime!.seconds).toBeGreaterThanOrEqual(summary.time!.seconds);
    }
    const audit = auditClient(server);
    const { verifierKey } = await audit.getCheckpoint({});
    const checkpoints = (await audit.listCheckpoints({ pageSize: 1000 })).checkpoints;
    expect(checkpoints.at(-1)!.size).toBeGreaterThanOrEqual(summaries.at(-1)!.sequence);
    expect(await verifyLog(records, checkpoints, parseVerifierKey(verifierKey))).toMatchObject({ ok: true });
  }, 60_000);

  it("sums each interval's refusals into a record at its end, while the server runs", async () => {
    const interval = 300;
    const server = await serve({ auditRefusalIntervalMs: interval });
    const before = (await allRecords(server)).length;
    const started = Date.now();
    await flood(server, 100);
    let refusals: AuditRecord[] = [];
    for (const deadline = Date.now() + 10_000; total(refusals) < 100 && Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 100))) {
      refusals = anonymousRecords((await allRecords(server)).slice(before));
    }
    expect(total(refusals)).toBe(100);
    expect(refusals.some((r) => r.repeatCount > 0n)).toBe(true);
    // At most two records (the first, at once, and the sum) per interval the flood spanned.
    expect(refusals.length).toBeLessThanOrEqual(2 * (Math.ceil((Date.now() - started) / interval) + 1));
  });

  it("tracks a bounded number of sources: the calls of sources beyond it are summed together, each source's first kept only for those tracked", async () => {
    let server = await serve({ auditRefusalSources: 2 });
    const before = (await allRecords(server)).length;
    const sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];
    for (const localAddress of sources) await flood(server, 3, { localAddress, parallel: 1 });
    server = await restart(server);
    const refusals = anonymousRecords((await allRecords(server)).slice(before));
    expect(total(refusals)).toBe(15);
    const bySource = (source: string) => refusals.filter((r) => r.sourceAddress === source);
    // The first two sources: their first call at once, then the sum of the other two.
    for (const source of sources.slice(0, 2)) expect(bySource(source).map(calls)).toEqual([1, 2]);
    // The others, summed in one record that names no source (they differ).
    expect(bySource("")).toEqual([expect.objectContaining({ repeatCount: 9n, rpc: LIST_OPERATIONS })]);
    expect(refusals).toHaveLength(5);
  });
});
