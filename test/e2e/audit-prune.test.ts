// The audit log's retention end to end, on SQLite and PostgreSQL: a real server (`amctl serve`)
// writes and checkpoints a log; `amctl audit prune` archives the records a checkpoint covers and
// the server deletes them; `amctl audit verify` then passes on the retained log (from the
// checkpoint it starts from), on the archives followed by the retained log (the whole log, from
// record 1), and on an export of the retained log away from the server; a changed byte of an
// archive or of the retained log is found; a prune past the newest checkpoint, with a head the
// checkpoint does not state, or by a caller that is not an operator's root is refused, deletes
// nothing, and an archive that cannot be written prunes nothing.
import { Code as RpcCode } from "../../src/gen/google/rpc/code_pb.js";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { bearer } from "../helpers/auth.js";
import { postgresAuditTables, sqliteAuditTables, type AuditTables } from "../helpers/audit-tables.js";
import { amctl, type CliResult } from "../helpers/cli.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { createProfile, requestId } from "../helpers/operations.js";
import { clientsFor, refusal } from "../helpers/runtime.js";
import { startChildServer, tempDir, type ChildServer } from "../helpers/server.js";
import { allAuditRecords } from "../helpers/audit-records.js";

const { database } = clusterForFile();

const PRUNE_RPC = "/agentmachine.v1.AuditService/PruneAuditLog";

function auditClient(server: ChildServer, token = server.token): Client<typeof AuditService> {
  return createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
}

/** `amctl audit ARGS... --server URL` as the server's root. */
function audit(server: ChildServer, ...args: string[]): Promise<CliResult> {
  return amctl(["audit", ...args, "--server", server.url], { AMCTL_TOKEN: server.token });
}

const records = (server: ChildServer): Promise<AuditRecord[]> => allAuditRecords(auditClient(server));

/** `count` tool grants, each an audited command. */
async function commands(server: ChildServer, profile: string, count: number): Promise<void> {
  const operations = clientsFor(server.url, server.token).operations;
  for (let i = 0; i < count; i += 1) {
    await operations.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: `tool-${i}` } } } });
  }
}

/** Waits until a checkpoint covers every record so far; returns the head. */
async function checkpointed(server: ChildServer): Promise<AuditRecord> {
  const client = auditClient(server);
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
    const head = (await records(server)).at(-1)!;
    if ((await client.getCheckpoint({})).checkpoint?.size === head.sequence) return head;
  }
  throw new Error("no checkpoint covered the log within 10 s");
}

/** `text` with one hex digit of the request digest of the record of `sequence` changed. */
function withRecordChanged(text: string, sequence: bigint): { text: string; line: number } {
  const lines = text.split("\n");
  const at = lines.findIndex((line) => line.startsWith('{"record":') && line.includes(`"sequence":"${sequence}"`));
  lines[at] = lines[at]!.replace(/"requestDigest":"(.)/, (_, digit: string) => `"requestDigest":"${digit === "0" ? "1" : "0"}`);
  return { text: lines.join("\n"), line: at + 1 };
}

const stores = [
  { name: "SQLite", storeArgs: async () => [] as string[], tables: (server: ChildServer) => Promise.resolve(sqliteAuditTables(server.dataDir)) },
  {
    name: "PostgreSQL",
    storeArgs: async () => ["--store", await database("prune")],
    tables: (_server: ChildServer, url?: string) => postgresAuditTables(url!),
  },
];

describe.each(stores)("on $name", ({ storeArgs, tables }) => {
  let server: ChildServer;
  let storeUrl: string | undefined;
  let profile: string;
  let dir: string;
  let keyFile: string;
  const openTables = (): Promise<AuditTables> => tables(server, storeUrl);

  beforeAll(async () => {
    const args = await storeArgs();
    storeUrl = args[1];
    server = await startChildServer([...args, "--audit-checkpoint-interval-ms", "100"]);
    profile = await createProfile(clientsFor(server.url, server.token).operations, "pruned");
    dir = tempDir("amctl-prune-");
    keyFile = join(dir, "audit.vkey");
    writeFileSync(keyFile, (await audit(server, "key")).stdout);
  }, 120_000);
  afterAll(async () => {
    server.child.kill("SIGTERM");
    await server.exited;
  });

  it("prunes what a checkpoint covers into archives; the retained log verifies from the checkpoint, the archives and the retained log as the whole log", async () => {
    await commands(server, profile, 10);
    const first = await checkpointed(server);
    const [archive1, archive2] = [join(dir, "archive-1.jsonl"), join(dir, "archive-2.jsonl")];

    const pruned = await audit(server, "prune", "--checkpoint", "latest", "--archive", archive1, "--key", keyFile);
    expect(pruned).toMatchObject({ code: 0, stdout: "" });
    expect(pruned.stderr).toMatch(
      new RegExp(
        `^archived records 1 to ${first.sequence} and \\d+ checkpoints to .*archive-1\\.jsonl; pruned ${first.sequence} records: the log now starts from the checkpoint of size ${first.sequence}\\n$`,
      ),
    );
    // The server kept what follows the checkpoint, starting with the record of the prune itself.
    const kept = await records(server);
    expect(kept[0]).toMatchObject({
      sequence: first.sequence + 1n,
      previousHash: first.hash,
      rpc: PRUNE_RPC,
      resource: `auditCheckpoints/${first.sequence}`,
      principal: "test-operator",
      decision: { allowed: true },
    });
    expect((await auditClient(server).listCheckpoints({})).checkpoints[0]).toMatchObject({ size: first.sequence, headHash: first.hash });

    await commands(server, profile, 5);
    const head = await checkpointed(server);
    const checkpoints = (await auditClient(server).listCheckpoints({ pageSize: 1000 })).checkpoints.length;
    const retained = await audit(server, "verify", "--key", keyFile);
    expect(retained).toEqual({
      code: 0,
      stdout: `ok: records ${first.sequence + 1n} to ${head.sequence} from the checkpoint of size ${first.sequence}, ${checkpoints} checkpoints, head ${head.hash}\n`,
      stderr: `note: records 1 to ${first.sequence} were pruned (record ${first.sequence + 1n}); to verify them too, pass their archives with --archive FILE\n`,
    });
    const whole = await audit(server, "verify", "--key", keyFile, "--archive", archive1);
    expect(whole).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(new RegExp(`^ok: ${head.sequence} records, \\d+ checkpoints, head ${head.hash}\\n$`)),
      stderr: "",
    });

    // A second prune, at a checkpoint named by its size: its archive starts from the first's checkpoint.
    const second = await audit(server, "prune", "--checkpoint", String(head.sequence), "--archive", archive2, "--key", keyFile);
    expect(second.stderr).toMatch(
      new RegExp(`^archived records ${first.sequence + 1n} to ${head.sequence} and \\d+ checkpoints .*; pruned ${head.sequence - first.sequence} records`),
    );
    expect(readFileSync(archive2, "utf8").split("\n")[1]).toMatch(/^\{"checkpoint":"agent-machine\/audit\/.*\\n\d+\\n/);
    await commands(server, profile, 2);
    const later = await checkpointed(server);
    expect(await audit(server, "verify", "--key", keyFile, "--archive", archive1, "--archive", archive2)).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(new RegExp(`^ok: ${later.sequence} records, \\d+ checkpoints, head ${later.hash}\\n$`)),
      stderr: "",
    });
    // The second archive alone goes on from the checkpoint its first line holds.
    expect(await audit(server, "verify", "--key", keyFile, "--archive", archive2)).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(new RegExp(`^ok: records ${first.sequence + 1n} to ${later.sequence} from the checkpoint of size ${first.sequence}, `)),
    });
    // An archive out of order is not the log's beginning.
    expect(await audit(server, "verify", "--key", keyFile, "--archive", archive2, "--archive", archive1)).toMatchObject({
      code: 1,
      stdout: expect.stringMatching(/^FAILED: archive .*archive-1\.jsonl: line 2: record 1: out of sequence/),
    });

    // Away from the server: an export of the retained log, after its archives.
    const exported = join(dir, "retained.jsonl");
    expect((await audit(server, "export", "-o", exported)).code).toBe(0);
    const offline = (...files: string[]) =>
      amctl(["audit", "verify", "--key", keyFile, "--from-export", exported, ...files.flatMap((file) => ["--archive", file])]);
    expect(await offline(archive1, archive2)).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(new RegExp(`^ok: ${later.sequence} records, `)),
      stderr: "",
    });
    expect(await offline()).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(new RegExp(`^ok: records ${head.sequence + 1n} to ${later.sequence} from the checkpoint of size ${head.sequence}, `)),
    });

    // Once pruned, a prune at the same checkpoint has nothing left to do.
    expect(await audit(server, "prune", "--checkpoint", String(head.sequence), "--archive", join(dir, "again.jsonl"))).toEqual({
      code: 0,
      stdout: "",
      stderr: `nothing to prune: the log already starts after record ${head.sequence}\n`,
    });
    expect(existsSync(join(dir, "again.jsonl"))).toBe(false);

    // A changed byte of an archive is found, named by file and line.
    const tampered = join(dir, "archive-1-tampered.jsonl");
    const change = withRecordChanged(readFileSync(archive1, "utf8"), 3n);
    writeFileSync(tampered, change.text);
    expect(await audit(server, "verify", "--key", keyFile, "--archive", tampered, "--archive", archive2)).toEqual({
      code: 1,
      stdout: `FAILED: archive ${tampered}: line ${change.line}: record 3: hash does not match its contents\n`,
      stderr: "",
    });
    // An archive cut short before its checkpoint is not the log up to it.
    const cut = join(dir, "archive-1-cut.jsonl");
    const lines = readFileSync(archive1, "utf8").split("\n");
    writeFileSync(cut, [...lines.slice(0, -3), ...lines.slice(-2)].join("\n"));
    expect(await audit(server, "verify", "--key", keyFile, "--archive", cut, "--archive", archive2)).toMatchObject({
      code: 1,
      stdout: expect.stringMatching(/^FAILED: archive .*archive-1-cut\.jsonl: /),
    });

    // A changed byte of the retained log, in the store, is found too; and a retained export without the checkpoint it starts from does not verify.
    const store = await openTables();
    const firstKept = (await records(server))[0]!;
    try {
      await store.putRecord(firstKept.sequence, { ...firstKept, principal: "mallory" });
      expect(await audit(server, "verify", "--key", keyFile, "--archive", archive1, "--archive", archive2)).toEqual({
        code: 1,
        stdout: `FAILED: record ${firstKept.sequence}: hash does not match its contents\n`,
        stderr: "",
      });
    } finally {
      await store.putRecord(firstKept.sequence, firstKept);
      await store.close();
    }
    const unanchored = join(dir, "unanchored.jsonl");
    writeFileSync(
      unanchored,
      readFileSync(exported, "utf8")
        .split("\n")
        .filter((_line, i) => i !== 1)
        .join("\n"),
    );
    expect(await amctl(["audit", "verify", "--key", keyFile, "--from-export", unanchored])).toMatchObject({
      code: 1,
      stdout: `FAILED: line 2: record ${head.sequence + 1n}: out of sequence, expected record 1\n`,
    });
  }, 120_000);

  it("refuses a prune past the newest checkpoint, of another head, or by a caller that is not an operator's root, and deletes nothing; an archive that cannot be written prunes nothing", async () => {
    await commands(server, profile, 3);
    const head = await checkpointed(server);
    const before = await records(server);
    const beyondSize = head.sequence + 1n;
    const archive = join(dir, "refused.jsonl");

    // The CLI does not even ask; the server would refuse.
    const beyond = await audit(server, "prune", "--checkpoint", String(beyondSize), "--archive", archive);
    expect(beyond).toEqual({
      code: 2,
      stdout: "",
      stderr: `amctl: no checkpoint of size ${beyondSize}: the newest covers ${head.sequence} records, and records no signed checkpoint covers cannot be pruned\n`,
    });
    const client = auditClient(server);
    const failed = async (promise: Promise<unknown>) => {
      const error = await refusal(promise);
      return { code: error.code, reason: error.findDetails(ErrorInfoSchema)[0]?.reason };
    };
    expect(await failed(client.pruneAuditLog({ checkpointSize: beyondSize, headHash: head.hash }))).toEqual({
      code: Code.FailedPrecondition,
      reason: "AUDIT_NOT_CHECKPOINTED",
    });
    expect(await failed(client.pruneAuditLog({ checkpointSize: head.sequence, headHash: before[0]!.hash }))).toEqual({
      code: Code.FailedPrecondition,
      reason: "AUDIT_HEAD_MISMATCH",
    });
    expect(await records(server)).toEqual(before);

    // A child delegation, even with audit_read, is not the operator.
    const { token } = await clientsFor(server.url, server.token).delegations.issueDelegation({ subject: "auditor", scope: { auditRead: true } });
    const child = await refusal(auditClient(server, token).pruneAuditLog({ checkpointSize: head.sequence, headHash: head.hash }));
    expect(child).toBeInstanceOf(ConnectError);
    expect(child.code).toBe(Code.PermissionDenied);
    const afterChild = await records(server);
    expect(afterChild.slice(before.length)).toMatchObject([
      { commandRef: "IssueDelegation", decision: { allowed: true } },
      { principal: "auditor", rpc: PRUNE_RPC, decision: { allowed: false, denialCode: RpcCode.PERMISSION_DENIED } },
    ]);

    // The archive's directory does not exist: nothing is pruned.
    const nowhere = await audit(server, "prune", "--checkpoint", "latest", "--archive", join(dir, "missing", "archive.jsonl"));
    expect(nowhere.code).toBe(2);
    expect((await records(server))[0]).toEqual(before[0]);
    expect(existsSync(archive)).toBe(false);
  }, 60_000);
});
