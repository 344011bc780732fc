// `amctl audit key | export | verify` end to end: a real server (`amctl serve` as a child) on a
// real store, SQLite and PostgreSQL, writes a log of allowed and denied commands and signs
// checkpoints of it; the server is stopped, its store is tampered with directly, the way someone
// with write access to the database would, and served again; the real CLI, given the verifier
// key saved before the tampering, must name the first record, checkpoint or line found wrong.
// Every case runs on its own copy of one log, so each tamper is the only one.
import { cpSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateAuditKey } from "../../src/audit/audit-key.js";
import { recordHash } from "../../src/model/audit-chain.js";
import { checkpointBody, parseVerifierKey, signCheckpoint } from "../../src/audit/signed-note.js";
import type { AuditCheckpoint } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { bearer, copyOperatorKey, fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { postgresAuditTables, sqliteAuditTables, type AuditTables } from "../helpers/audit-tables.js";
import { amctl, type CliResult } from "../helpers/cli.js";
import { clusterForFile } from "../helpers/cluster-for-file.js";
import { createProfile, requestId } from "../helpers/operations.js";
import { clientsFor, refusal } from "../helpers/runtime.js";
import { startChildServer, tempDir, type ChildServer } from "../helpers/server.js";

const { database } = clusterForFile();

/** Long enough that no checkpoint is signed while a case runs (the next is at shutdown, after it). */
const NO_CHECKPOINT = ["--audit-checkpoint-interval-ms", "3600000"];

const PROFILE_ID = "audited";

/** Where a stopped server kept its state: its data dir, and with PostgreSQL its database. */
interface Store {
  dataDir: string;
  /** `amctl serve` arguments that name the store. */
  storeArgs: string[];
  tables(): Promise<AuditTables>;
  /** A copy, to tamper with. */
  copy(): Promise<Store>;
}

/** A log written by a server, then left alone: cases tamper with copies of its store. */
interface Log {
  store: Store;
  /** Saved with `amctl audit key` before anything was tampered with, away from the data dir. */
  keyFile: string;
  /** `<name>+<key id>`, as the verifier names the key. */
  keyLabel: string;
  records: bigint;
  /** The hash of the last record. */
  head: string;
  /** In order of size; the last covers every record. */
  checkpoints: AuditCheckpoint[];
}

function auditClient(server: ChildServer): Client<typeof AuditService> {
  return createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
}

async function stop(server: ChildServer): Promise<void> {
  server.child.kill("SIGTERM");
  await server.exited;
}

/** Runs `amctl audit ARGS... --server URL` as `server`'s root. */
function audit(server: ChildServer, ...args: string[]): Promise<CliResult> {
  return amctl(["audit", ...args, "--server", server.url], { AMCTL_TOKEN: server.token });
}

/**
 * `count` commands: two in three allowed (tool grants), one in three denied (a read of the log by
 * a caller without audit_read: a denial of an authenticated caller is a record of its own).
 */
async function commands(server: ChildServer, profile: string, count: number): Promise<void> {
  const root = clientsFor(server.url, server.token);
  const noAudit = await mintRoot(await operatorOf(server.dataDir), { subject: "no-audit", scope: { ...fullScope, auditRead: false } });
  const denied = createClient(AuditService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(noAudit)] }));
  for (let i = 0; i < count; i += 1) {
    if (i % 3 === 2) await refusal(denied.listAuditRecords({}));
    else await root.operations.submitOperation({ requestId: requestId(), profile, spec: { kind: { case: "toolGrantApply", value: { tool: `tool-${i}` } } } });
  }
}

/** Waits until a checkpoint covers every record so far. */
async function checkpointed(server: ChildServer): Promise<void> {
  const client = auditClient(server);
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
    const head = (await client.listAuditRecords({ pageSize: 1000 })).records.at(-1)?.sequence;
    if ((await client.getCheckpoint({})).checkpoint?.size === head) return;
  }
  throw new Error("no checkpoint covered the log within 10 s");
}

/**
 * Writes a log of 31 commands in three batches, each covered by a checkpoint before the next
 * (so there are at least three), saves the verifier key and stops the server.
 */
async function writeLog(store: Store): Promise<Log> {
  const server = await startChildServer([...store.storeArgs, "--audit-checkpoint-interval-ms", "100"], { dataDir: store.dataDir });
  const keyFile = join(tempDir("amctl-audit-key-"), "audit.vkey");
  try {
    const profile = await createProfile(clientsFor(server.url, server.token).operations, PROFILE_ID);
    for (let batch = 0; batch < 3; batch += 1) {
      await commands(server, profile, 10);
      await checkpointed(server);
    }
    const key = await audit(server, "key");
    expect(key).toMatchObject({ code: 0, stderr: "" });
    writeFileSync(keyFile, key.stdout);
  } finally {
    await stop(server);
  }
  const verifier = parseVerifierKey(readFileSync(keyFile, "utf8").trim());
  const tables = await store.tables();
  try {
    const checkpoints = await tables.checkpoints();
    const last = checkpoints.at(-1)!;
    return { store, keyFile, keyLabel: `${verifier.name}+${verifier.keyId.toString("hex")}`, records: last.size, head: last.headHash, checkpoints };
  } finally {
    await tables.close();
  }
}

function copyDataDir(dataDir: string): string {
  const copy = tempDir("amctl-audit-copy-");
  cpSync(dataDir, copy, { recursive: true });
  copyOperatorKey(dataDir, copy); // the private key lives outside the data dir, by its path
  return copy;
}

function sqliteStore(dataDir: string): Store {
  return { dataDir, storeArgs: [], tables: async () => sqliteAuditTables(dataDir), copy: async () => sqliteStore(copyDataDir(dataDir)) };
}

let databaseCopies = 0;

/** A new database with the contents of the one at `url` (to which nobody may be connected). */
async function copyDatabase(url: string): Promise<string> {
  const name = `audit_copy_${(databaseCopies += 1)}`;
  const admin = new pg.Client({ connectionString: new URL("/postgres", url).href });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)} TEMPLATE ${pg.escapeIdentifier(new URL(url).pathname.slice(1))}`);
  } finally {
    await admin.end();
  }
  return new URL(`/${name}`, url).href;
}

function postgresStore(dataDir: string, url: string): Store {
  return {
    dataDir,
    storeArgs: ["--store", url],
    tables: () => postgresAuditTables(url),
    copy: async () => postgresStore(copyDataDir(dataDir), await copyDatabase(url)),
  };
}

/** A server on a copy of `log`'s store, tampered with by `tamper` first. */
async function serveCopy(log: Log, tamper: (tables: AuditTables) => Promise<void> = async () => {}): Promise<ChildServer> {
  const copy = await log.store.copy();
  const tables = await copy.tables();
  try {
    await tamper(tables);
  } finally {
    await tables.close();
  }
  return startChildServer([...copy.storeArgs, ...NO_CHECKPOINT], { dataDir: copy.dataDir });
}

/** The size of the first checkpoint that covers record `sequence`. */
function coveringSize(log: Log, sequence: bigint): bigint {
  return log.checkpoints.find((checkpoint) => checkpoint.size >= sequence)!.size;
}

/** `checkpoint` stating another head hash, its signature left as it was. */
function withHead(checkpoint: AuditCheckpoint, headHash: string): AuditCheckpoint {
  const signatures = checkpoint.signedNote.slice(checkpointBody(checkpoint).length);
  return { ...checkpoint, headHash, signedNote: checkpointBody({ ...checkpoint, headHash }) + signatures };
}

interface TamperCase {
  name: string;
  tamper(tables: AuditTables, log: Log): Promise<void>;
  /** What `verify` prints. */
  verdict(log: Log): string;
}

const tamperCases: TamperCase[] = [
  {
    name: "a field of one record edited (its principal)",
    async tamper(tables) {
      await tables.putRecord(5n, { ...(await tables.record(5n)), principal: "mallory" });
    },
    verdict: () => "FAILED: record 5: hash does not match its contents",
  },
  {
    name: "a record deleted",
    tamper: (tables) => tables.deleteRecords(12n, 12n),
    verdict: () => "FAILED: record 13: out of sequence, expected record 12",
  },
  {
    name: "two records swapped",
    async tamper(tables) {
      const [fifteen, sixteen] = [await tables.record(15n), await tables.record(16n)];
      await tables.putRecord(15n, sixteen);
      await tables.putRecord(16n, fifteen);
    },
    verdict: () => "FAILED: record 16: out of sequence, expected record 15",
  },
  {
    name: "the tail cut off, the checkpoint that covered it kept",
    tamper: (tables, log) => tables.deleteRecords(log.records - 2n, log.records),
    verdict: (log) => `FAILED: log ends at record ${log.records - 3n} but a checkpoint covers ${coveringSize(log, log.records - 2n)} records (truncated)`,
  },
  {
    name: "a record edited and the chain re-sealed to the head (only a checkpoint can tell)",
    async tamper(tables, log) {
      let previousHash = (await tables.record(4n)).hash;
      for (let sequence = 5n; sequence <= log.records; sequence += 1n) {
        const record = { ...(await tables.record(sequence)), previousHash };
        if (sequence === 5n) record.principal = "mallory";
        record.hash = previousHash = recordHash(record);
        await tables.putRecord(sequence, record);
      }
    },
    verdict: (log) => `FAILED: checkpoint of size ${coveringSize(log, 5n)}: head hash does not match record ${coveringSize(log, 5n)}`,
  },
  {
    name: "a checkpoint re-signed with another key",
    async tamper(tables, log) {
      const checkpoint = log.checkpoints[1]!;
      const other = loadOrCreateAuditKey(join(tempDir("amctl-other-key-"), "key.pem"), checkpoint.origin);
      await tables.putCheckpoint(checkpoint.size, { ...checkpoint, signedNote: signCheckpoint(other, checkpoint) });
    },
    verdict: (log) => `FAILED: checkpoint of size ${log.checkpoints[1]!.size}: no signature by key ${log.keyLabel}`,
  },
  {
    name: "a checkpoint's head changed, its signature kept",
    async tamper(tables, log) {
      const checkpoint = log.checkpoints[1]!;
      await tables.putCheckpoint(checkpoint.size, withHead(checkpoint, (await tables.record(1n)).hash));
    },
    verdict: (log) => `FAILED: checkpoint of size ${log.checkpoints[1]!.size}: signature does not verify with key ${log.keyLabel}`,
  },
];

const stores = [
  { name: "SQLite", fresh: async () => sqliteStore(tempDir()) },
  { name: "PostgreSQL", fresh: async () => postgresStore(tempDir(), await database("audit")) },
];

describe.each(stores)("on $name", ({ fresh }) => {
  let log: Log;
  beforeAll(async () => {
    log = await writeLog(await fresh());
  }, 120_000);

  // Concurrently: a case mostly waits for a server and the CLI to start.
  it.for(tamperCases)("verify names where: $name", { concurrent: true, timeout: 90_000 }, async ({ tamper, verdict }, { expect }) => {
    const server = await serveCopy(log, (tables) => tamper(tables, log));
    try {
      expect(await audit(server, "verify", "--key", log.keyFile)).toEqual({ code: 1, stdout: `${verdict(log)}\n`, stderr: "" });
    } finally {
      await stop(server);
    }
  });

  it("verify passes a log nobody touched, and points out records after the last checkpoint", async () => {
    const server = await serveCopy(log);
    try {
      const ok = `ok: ${log.records} records, ${log.checkpoints.length} checkpoints, head ${log.head}\n`;
      expect(log.records).toBe(31n);
      expect(log.checkpoints.length).toBeGreaterThanOrEqual(3);
      expect(await audit(server, "verify", "--key", log.keyFile)).toEqual({ code: 0, stdout: ok, stderr: "" });
      // Without --key, the key the server publishes, with a warning of what that cannot prove.
      const published = await audit(server, "verify");
      expect(published).toMatchObject({ code: 0, stdout: ok });
      expect(published.stderr).toContain("proves only that the log is internally consistent");

      await commands(server, `profiles/${PROFILE_ID}`, 3);
      const client = auditClient(server);
      const head = (await client.listAuditRecords({ pageSize: 1000 })).records.at(-1)!;
      expect(await audit(server, "verify", "--key", log.keyFile)).toEqual({
        code: 0,
        stdout: `ok: ${head.sequence} records, ${log.checkpoints.length} checkpoints, head ${head.hash}\n`,
        stderr: "warning: 3 records are not covered by a checkpoint yet\n",
      });
    } finally {
      await stop(server);
    }
  }, 60_000);

  it("export writes a file that verifies away from the server with the saved key, names the line of a changed byte, and is a prefix of later exports", async () => {
    const server = await serveCopy(log);
    const dir = tempDir("amctl-export-");
    const file = join(dir, "audit.jsonl");
    let exported: CliResult;
    let later: CliResult;
    try {
      exported = await audit(server, "export", "-o", file);
      await commands(server, `profiles/${PROFILE_ID}`, 3);
      later = await audit(server, "export");
    } finally {
      await stop(server);
    }
    expect(exported).toEqual({ code: 0, stdout: "", stderr: `exported ${log.records} records, ${log.checkpoints.length} checkpoints to ${file}\n` });
    expect(readdirSync(dir)).toEqual(["audit.jsonl"]);
    const text = readFileSync(file, "utf8");
    // The log only grew: the earlier export is the later one's beginning, byte for byte.
    expect(later).toMatchObject({ code: 0, stderr: `exported ${log.records + 3n} records, ${log.checkpoints.length} checkpoints to stdout\n` });
    expect(later.stdout.startsWith(text)).toBe(true);

    // Somewhere else, without the server: the files, and the key kept apart from them.
    const elsewhere = tempDir("amctl-elsewhere-");
    const [copy, laterCopy, key] = [join(elsewhere, "audit.jsonl"), join(elsewhere, "later.jsonl"), join(elsewhere, "audit.vkey")];
    cpSync(file, copy);
    writeFileSync(laterCopy, later.stdout);
    cpSync(log.keyFile, key);
    const verify = (path: string) => amctl(["audit", "verify", "--from-export", path, "--key", key]);
    expect(await verify(copy)).toEqual({
      code: 0,
      stdout: `ok: ${log.records} records, ${log.checkpoints.length} checkpoints, head ${log.head}\n`,
      stderr: "",
    });
    expect(await verify(laterCopy)).toMatchObject({ code: 0, stderr: "warning: 3 records are not covered by a checkpoint yet\n" });

    // One hex digit of record 7's request digest changed.
    const lines = text.split("\n");
    const at = lines.findIndex((line) => line.startsWith('{"record":') && line.includes('"sequence":"7"'));
    lines[at] = lines[at]!.replace(/"requestDigest":"(.)/, (_, digit: string) => `"requestDigest":"${digit === "0" ? "1" : "0"}`);
    writeFileSync(copy, lines.join("\n"));
    expect(await verify(copy)).toEqual({ code: 1, stdout: `FAILED: line ${at + 1}: record 7: hash does not match its contents\n`, stderr: "" });
  }, 60_000);
});

describe("without a checkpoint, a key or audit_read", () => {
  let server: ChildServer;
  beforeAll(async () => {
    server = await startChildServer(NO_CHECKPOINT);
  });
  afterAll(() => stop(server));

  it("verify of a log without a checkpoint passes with a warning", async () => {
    await createProfile(clientsFor(server.url, server.token).operations, PROFILE_ID);
    const { records } = await auditClient(server).listAuditRecords({});
    const result = await audit(server, "verify");
    expect(result).toMatchObject({ code: 0, stdout: `ok: ${records.length} records, 0 checkpoints, head ${records.at(-1)!.hash}\n` });
    expect(result.stderr).toContain("warning: no checkpoint");
  });

  it("verify --from-export without --key is a usage error that says why", async () => {
    const result = await amctl(["audit", "verify", "--from-export", join(tempDir(), "audit.jsonl")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("needs --key FILE: an export must be verified with a verifier key obtained separately");
  });

  it("export by a caller without audit_read is refused (exit 1) and leaves no file", async () => {
    const token = await mintRoot(await operatorOf(server.dataDir), { subject: "no-audit", scope: { ...fullScope, auditRead: false } });
    const dir = tempDir("amctl-export-");
    const result = await amctl(["audit", "export", "-o", join(dir, "audit.jsonl"), "--server", server.url], { AMCTL_TOKEN: token });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("amctl: PermissionDenied");
    expect(readdirSync(dir)).toEqual([]);
  });
});
