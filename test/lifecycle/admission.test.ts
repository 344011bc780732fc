// Admission without sockets, over a real SQLite store: what it admits (named operations/{id},
// queued, with a budget reservation exactly for executions) and what it refuses (a cancel of a
// target that is no execution or has ended, a type the server cannot run).
import { Writable } from "node:stream";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DelegationSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, ProfileType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { OperationSpecSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { operationIdOf, operationName } from "../../src/model/resource-names.js";
import type { Principal } from "../../src/governance/authority.js";
import { PolicyEngine } from "../../src/governance/policy/policy-engine.js";
import { admit, type AdmissionContext } from "../../src/lifecycle/admission.js";
import { operationTypeOfSpec } from "../../src/model/spec-types.js";
import { defaultConfig } from "../../src/config/config.js";
import { createLogger } from "../../src/api/logger.js";
import { SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import type { Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { tempDir } from "../helpers/temp-dir.js";

const silent = createLogger("error", new Writable({ write: (_chunk, _encoding, done) => done() }));
const PROFILE = "profiles/work";

type Spec = MessageInitShape<typeof OperationSpecSchema>["kind"];

let store: SqliteStore;
let context: AdmissionContext;
/** The profile.create that made PROFILE: an operation that is no execution. */
let profileCreate: Operation;

function request(spec: Spec): SubmitOperationRequest {
  return create(SubmitOperationRequestSchema, { requestId: `r-${Math.random()}`, profile: PROFILE, spec: { kind: spec } });
}

/** Admits `spec` and stores the result, as SubmitOperation does. */
async function submit(spec: Spec): Promise<Operation> {
  const admitted = await admit(request(spec), context);
  const result = await store.createOperation({ ...admitted, idempotencyScope: context.principal.delegation.name });
  if (result.kind !== "created") throw new Error(`not created: ${result.kind}`);
  return result.operation;
}

async function end(operation: Operation, state: TaskState): Promise<void> {
  await store.modifyOperation(operation.name, (next) => {
    next.state = state;
    return { operation: next };
  });
}

async function refusal(spec: Spec, overrides: Partial<AdmissionContext> = {}): Promise<ConnectError> {
  const error = await admit(request(spec), { ...context, ...overrides }).then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (error === undefined) throw new Error("admitted");
  return error;
}

const startSpec: Spec = { case: "executionStart", value: { argv: ["true"] } };
const cancelOf = (target: string): Spec => ({ case: "executionCancel", value: { target, reason: "" } });

beforeEach(async () => {
  const dataDir = tempDir("amctl-admission-");
  store = new SqliteStore(dataDir);
  const delegation = await store.putDelegation(
    create(DelegationSchema, {
      name: "delegations/root",
      subject: "test",
      scope: { operationTypes: Object.values(operationTypeOfSpec), profiles: ["*"], tools: ["*"], modelProviders: ["*"], budget: defaultConfig.defaultBudget },
      expireTime: timestampFromDate(new Date(Date.now() + 3_600_000)),
    }),
  );
  const principal: Principal = { delegation, chain: [] };
  context = {
    store,
    defaultBudget: defaultConfig.defaultBudget,
    dataDir,
    principal,
    policy: new PolicyEngine(store, silent),
    executable: new Set(Object.values(operationTypeOfSpec)),
    workerSelectors: false,
  };
  profileCreate = await submit({ case: "profileCreate", value: { profileId: "work", profileType: ProfileType.PERSONAL } });
});

afterEach(async () => {
  await store.close();
});

describe("admission", () => {
  it("admits an execution queued, under a new operations/{id} name, with a reservation of its budget", async () => {
    const admitted = await admit(request(startSpec), context);
    expect(admitted.operation.state).toBe(TaskState.QUEUED);
    expect(admitted.operation.name).toBe(operationName(operationIdOf(admitted.operation.name)));
    expect(operationIdOf(admitted.operation.name)).toMatch(/^[0-9A-Z]{26}$/);
    expect(admitted.reservation?.accounts).toEqual(["delegations/root", PROFILE]);
  });

  it("reserves nothing for a record or a command", async () => {
    const target = await submit(startSpec);
    for (const spec of [cancelOf(target.name), { case: "profileCreate", value: { profileId: "other", profileType: ProfileType.PERSONAL } }] as Spec[]) {
      expect((await admit(request(spec), context)).reservation).toBeUndefined();
    }
  });

  it("admits a cancel of a queued execution", async () => {
    const target = await submit(startSpec);
    const admitted = await admit(request(cancelOf(target.name)), context);
    expect(admitted.operation.type).toBe(OperationType.EXECUTION_CANCEL);
  });

  it("refuses a cancel of an operation that is no execution (FailedPrecondition)", async () => {
    const error = await refusal(cancelOf(profileCreate.name));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toBe(`${profileCreate.name} is not an execution`);
  });

  it.each([TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED])(
    "refuses a cancel of an execution that has ended (%s) as an illegal transition",
    async (state) => {
      const target = await submit(startSpec);
      await end(target, state);
      const error = await refusal(cancelOf(target.name));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(new RegExp(`^${target.name} is \\w+: cannot cancel$`));
    },
  );

  it("refuses a cancel of an operation it cannot see as NotFound", async () => {
    const error = await refusal(cancelOf(operationName("01NOSUCHOPERATION000000000")));
    expect(error.code).toBe(Code.NotFound);
  });

  it("refuses a type the server has no executor for", async () => {
    const executable = new Set(Object.values(operationTypeOfSpec).filter((type) => type !== OperationType.EXECUTION_START));
    const error = await refusal(startSpec, { executable });
    expect(error.code).toBe(Code.FailedPrecondition);
  });
});
