// biome-ignore-all lint/suspicious/noExplicitAny: the tests edit parsed JSON documents of any shape
// The one mapping between contract spellings and proto: complete, exact and reversible.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, type DescEnum } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { describe, expect, it } from "vitest";
import { WorkspaceOperationContractSchema } from "../../src/gen/agentmachine/v1/contract_pb.js";
import { ArtifactTypeSchema, EventTypeSchema, OperationTypeSchema, ProfileTypeSchema, TaskStateSchema } from "../../src/gen/agentmachine/v1/types_pb.js";
import {
  artifactTypeNames,
  contractFromJson,
  contractToJson,
  eventTypeNames,
  operationTypeNames,
  profileTypeNames,
  taskStateNames,
  type JsonObject,
} from "../../src/model/mapping.js";
import { buildServerContract } from "../../src/contract/server-contract.js";
import { validateContractDocument, validateContractMessage } from "../../src/contract/validate.js";
import { defaultConfig } from "../../src/config/config.js";
import { repoRoot } from "../helpers/server.js";

const schema = JSON.parse(readFileSync(join(repoRoot, "src/contract/schema/workspace-operation-contract.schema.json"), "utf8")) as {
  $defs: Record<string, { enum?: string[] }>;
  properties: Record<string, any>;
};
const example = JSON.parse(readFileSync(join(repoRoot, "examples/contracts/local-execution.json"), "utf8")) as JsonObject;

describe("contract spellings", () => {
  it.each([
    ["OperationType", OperationTypeSchema, operationTypeNames, schema.$defs.operationType!.enum],
    ["ProfileType", ProfileTypeSchema, profileTypeNames, schema.$defs.profileType!.enum],
    ["ArtifactType", ArtifactTypeSchema, artifactTypeNames, schema.$defs.artifactType!.enum],
    ["EventType", EventTypeSchema, eventTypeNames, schema.$defs.operationEventType!.enum],
    ["TaskState", TaskStateSchema, taskStateNames, schema.properties.operationTask.properties.state.enum],
  ] as [string, DescEnum, ReadonlyMap<number, string>, string[]][])(
    "%s: every proto value but UNSPECIFIED has exactly the schema's spelling",
    (_name, desc, table, spellings) => {
      const specified = desc.values.filter((v) => v.number !== 0).map((v) => v.number);
      expect([...table.keys()].sort()).toEqual(specified.sort());
      expect([...table.values()].sort()).toEqual([...spellings].sort());
    },
  );
});

describe("contract JSON ⇄ message", () => {
  it("round-trips the upstream example exactly", () => {
    const message = contractFromJson(example);
    expect(contractToJson(message)).toEqual(example);
    expect(JSON.stringify(contractToJson(message))).toBe(JSON.stringify(example));
  });

  it("renders an empty message so that every missing part is named", () => {
    const result = validateContractMessage(create(WorkspaceOperationContractSchema));
    expect(result.valid).toBe(false);
    const paths = result.violations.map((v) => v.path);
    expect(paths).toEqual(expect.arrayContaining(["/workspaceOperation", "/controls", "/audit", "/specVersion"]));
  });

  it("renders an unspecified enum by its proto name so the violation names it", () => {
    const message = contractFromJson(example);
    message.operationTask!.state = 0;
    const result = validateContractMessage(message);
    expect(result.violations).toContainEqual(expect.objectContaining({ path: "/operationTask/state", keyword: "enum" }));
    expect(JSON.stringify(contractToJson(message))).toContain("TASK_STATE_UNSPECIFIED");
  });

  it("refuses a budget above 2^53-1 instead of rounding it", () => {
    const message = contractFromJson(example);
    message.controls!.budget!.tokens = 2n ** 60n;
    expect(validateContractMessage(message)).toMatchObject({ valid: false, violations: [{ path: "", keyword: "type" }] });
  });
});

describe("the server's own contract", () => {
  const own = buildServerContract({ defaultBudget: defaultConfig.defaultBudget, startedAt: new Date(0) });

  it("validates against the upstream schema", () => {
    expect(validateContractDocument(contractToJson(own))).toEqual({ valid: true, violations: [] });
  });

  it("passes its own protovalidate rules", () => {
    expect(createValidator().validate(WorkspaceOperationContractSchema, own).kind).toBe("valid");
  });

  it("declares every operation type auditable", () => {
    expect(own.audit!.auditableCommands.map((c) => c.operationType).sort()).toEqual([...operationTypeNames.keys()].sort());
  });
});

describe("protovalidate rules agree with the schema", () => {
  // Each mutation is representable in the message; the proto rules and the JSON schema must
  // reach the same verdict, so a client validating with protovalidate sees what we see.
  const validator = createValidator();
  const mutations: [string, (doc: any) => void][] = [
    ["unchanged", () => {}],
    ["specVersion", (d) => (d.specVersion = "0.2.0")],
    ["id pattern", (d) => (d.id = "urn:other")],
    ["kind", (d) => (d.kind = "Other")],
    ["ambientAuthority", (d) => (d.controls.ambientAuthority = true)],
    ["delegatedAuthorityRequired", (d) => (d.controls.delegatedAuthorityRequired = false)],
    ["policy gate", (d) => (d.controls.policyGates.networkProfile = false)],
    ["externalWrites", (d) => (d.controls.durableWorkspaceState.externalWrites = true)],
    ["durable mode", (d) => (d.controls.durableWorkspaceState.mode = "anything")],
    ["credentialsIncluded", (d) => (d.artifacts.agentMachineDiagnosticBundle.credentialsIncluded = true)],
    ["binding profile", (d) => (d.artifacts.modelProviderBinding.profileType = "personal")],
    ["missing operation type", (d) => d.supportedOperationTypes.pop()],
    ["duplicate operation type", (d) => d.supportedOperationTypes.push(d.supportedOperationTypes[0])],
    ["missing profile", (d) => d.profiles.supported.shift()],
    ["missing artifact", (d) => d.artifacts.requiredArtifacts.pop()],
    ["missing event type", (d) => (d.controls.operationEvents = d.controls.operationEvents.slice(1))],
    ["missing revoke audit", (d) => (d.audit.auditableCommands = d.audit.auditableCommands.filter((c: any) => !c.operationType.endsWith("revoke")))],
    ["auditable false", (d) => (d.audit.auditableCommands[0].auditable = false)],
    ["separation false", (d) => (d.profiles.inspectableSeparation.personalVsCorporateFirewall = false)],
  ];

  it.each(mutations)("%s", (_name, mutate) => {
    const document = structuredClone(example) as any;
    mutate(document);
    const schemaVerdict = validateContractDocument(document).valid;
    const message = contractFromJson(document);
    expect(validator.validate(WorkspaceOperationContractSchema, message).kind === "valid").toBe(schemaVerdict);
  });
});
