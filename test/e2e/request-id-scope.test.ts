// Idempotency keys are scoped to the caller's delegation (issue 14, finding 4), on both stores over
// real sockets: a request id one caller used never answers another caller (nor tells it anything
// of the other's operation), and the key under which CancelOperation keeps its one cancel per
// target is in a scope no client can write. Rows stored before the scopes existed keep answering
// their own caller's retries, and nobody else's.
import Database from "better-sqlite3";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { SQLITE_FILE } from "../../src/store/sqlite/sqlite-store.js";
import { bearer } from "../helpers/auth.js";
import { execution, requestId, waitForEnd } from "../helpers/operations.js";
import { startWithScopedCallers, storesUnderTest, type ScopedCaller, type ScopedCallers } from "../helpers/scoped-callers.js";

const SLEEPER = [process.execPath, "-e", "setTimeout(() => {}, 60000)"];

const grant = (profile: string, tool: string, id: string) => ({ requestId: id, profile, spec: { kind: { case: "toolGrantApply" as const, value: { tool } } } });

describe.each(storesUnderTest())("%s", (_store, storeOf) => {
  let storeUrl: string | undefined;
  let callers: ScopedCallers;
  let mine: ScopedCaller;
  let theirs: ScopedCaller;

  beforeAll(async () => {
    storeUrl = await storeOf();
    callers = await startWithScopedCallers(storeUrl);
    ({ mine, theirs } = callers);
  });
  afterAll(() => callers?.server.close());

  /** Starts a long execution of `caller`'s in its profile. */
  async function sleeper(caller: ScopedCaller): Promise<Operation> {
    return (await caller.clients.operations.submitOperation(execution(caller.profile, SLEEPER))).operation!;
  }

  /** Moves operations into the scope that the migration gives rows stored before request ids were scoped. */
  async function asStoredBeforeScopes(names: string[]): Promise<void> {
    if (storeUrl === undefined) {
      const db = new Database(join(callers.server.dataDir, SQLITE_FILE));
      try {
        db.prepare(`UPDATE operations SET idempotency_scope = 'legacy' WHERE name IN (${names.map(() => "?").join(", ")})`).run(...names);
      } finally {
        db.close();
      }
      return;
    }
    const client = new pg.Client(storeUrl);
    await client.connect();
    try {
      await client.query("UPDATE operations SET idempotency_scope = 'legacy' WHERE name = ANY($1)", [names]);
    } finally {
      await client.end();
    }
  }

  /** The cancel CancelOperation answered with is a real one: an execution_cancel of `target`, in its profile, audited; the target ends cancelled. */
  async function expectRealCancel(cancel: Operation | undefined, target: Operation): Promise<void> {
    expect(cancel).toMatchObject({
      type: OperationType.EXECUTION_CANCEL,
      profile: target.profile,
      spec: { kind: { case: "executionCancel", value: { target: target.name } } },
    });
    expect((await waitForEnd(theirs.clients.operations, target.name)).operation.state).toBe(TaskState.CANCELLED);
    const audit = createClient(AuditService, createGrpcTransport({ baseUrl: callers.server.url, interceptors: [bearer(callers.server.token)] }));
    const { records } = await audit.listAuditRecords({ pageSize: 1000, filter: { operationTypes: [OperationType.EXECUTION_CANCEL] } });
    expect(records.map((record) => record.resource)).toContain(cancel!.name);
  }

  it("a client's request id spelled like the server's cancel key squats nothing: CancelOperation makes a real cancel", async () => {
    const target = await sleeper(theirs);
    const squat = await mine.clients.operations.submitOperation(grant(mine.profile, "git", `cancel:${target.name.replace("operations/", "")}`));
    expect(squat.created).toBe(true);
    const { cancelOperation } = await theirs.clients.operations.cancelOperation({ name: target.name, reason: "no longer needed" });
    expect(cancelOperation?.name).not.toBe(squat.operation!.name);
    await expectRealCancel(cancelOperation, target);
  });

  it("two cancels of one target at once answer with its one cancel operation", async () => {
    const target = await sleeper(theirs);
    const answers = await Promise.all(["first", "second"].map((reason) => theirs.clients.operations.cancelOperation({ name: target.name, reason })));
    expect(answers[1]!.cancelOperation?.name).toBe(answers[0]!.cancelOperation?.name);
    await expectRealCancel(answers[0]!.cancelOperation, target);
  });

  it("the same request id from two callers makes two independent operations; each retry answers its own caller", async () => {
    const shared = requestId("shared");
    const first = await mine.clients.operations.submitOperation(grant(mine.profile, "git", shared));
    const second = await theirs.clients.operations.submitOperation(grant(theirs.profile, "git", shared));
    expect([first.created, second.created]).toEqual([true, true]);
    expect(first.operation).toMatchObject({ profile: mine.profile, delegation: mine.delegation.name });
    expect(second.operation).toMatchObject({ profile: theirs.profile, delegation: theirs.delegation.name });
    expect(await mine.clients.operations.submitOperation(grant(mine.profile, "git", shared))).toMatchObject({
      created: false,
      operation: { name: first.operation!.name },
    });
    expect(await theirs.clients.operations.submitOperation(grant(theirs.profile, "git", shared))).toMatchObject({
      created: false,
      operation: { name: second.operation!.name },
    });
    // Another body under a key of one's own is AlreadyExists, naming one's own operation only.
    const conflict = ConnectError.from(await theirs.clients.operations.submitOperation(grant(theirs.profile, "curl", shared)).catch((error: unknown) => error));
    expect(conflict.code).toBe(Code.AlreadyExists);
    expect(conflict.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ request_id: shared, operation: second.operation!.name });
    expect(conflict.rawMessage).not.toContain(mine.profile);
  });

  it("rows stored before request ids were scoped answer retries of the delegation that submitted them, and squat no cancel", async () => {
    const target = await sleeper(theirs);
    const squat = (await mine.clients.operations.submitOperation(grant(mine.profile, "git", `cancel:${target.name.replace("operations/", "")}`))).operation!;
    const old = requestId("old");
    const theirsBefore = (await theirs.clients.operations.submitOperation(grant(theirs.profile, "git", old))).operation!;
    await asStoredBeforeScopes([squat.name, theirsBefore.name]);

    expect(await theirs.clients.operations.submitOperation(grant(theirs.profile, "git", old))).toMatchObject({
      created: false,
      operation: { name: theirsBefore.name },
    });
    const mineNow = await mine.clients.operations.submitOperation(grant(mine.profile, "git", old));
    expect(mineNow).toMatchObject({ created: true, operation: { profile: mine.profile } });
    const { cancelOperation } = await theirs.clients.operations.cancelOperation({ name: target.name });
    expect(cancelOperation?.name).not.toBe(squat.name);
    await expectRealCancel(cancelOperation, target);
  });
});
