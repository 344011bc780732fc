// Two callers of one server, each scoped to a profile of its own (children of one root, as the
// agents of one operator are), for tests of what one caller may take or learn of the other's.
// Run on each store: the embedded SQLite file and a PostgreSQL database.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Delegation } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationType, ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { clusterForFile } from "./cluster-for-file.js";
import { clientsFor, createProfileWith, roomyBudget, wideRoot, type Clients } from "./runtime.js";
import { startTestServer, type TestServer } from "./server.js";
import type { ServerConfig } from "../../src/config/config.js";

export interface ScopedCaller {
  /** The one profile its delegation covers. */
  profile: string;
  delegation: Delegation;
  token: string;
  clients: Clients;
}

export interface ScopedCallers {
  server: TestServer;
  /** The root both callers are children of (it sees every profile). */
  root: Clients;
  mine: ScopedCaller;
  theirs: ScopedCaller;
}

const CALLER_TYPES = [
  OperationType.EXECUTION_START,
  OperationType.EXECUTION_CANCEL,
  OperationType.TOOL_GRANT_APPLY,
  OperationType.TOOL_GRANT_REVOKE,
  OperationType.DIAGNOSTICS_EXPORT_REDACTED,
];

/** The stores to run a file's tests on: [name, the `store` config for a new server]. Call at the file's top level. */
export function storesUnderTest(): [string, () => Promise<string | undefined>][] {
  const { database } = clusterForFile();
  return [
    ["SQLite", async () => undefined],
    ["PostgreSQL", () => database("scoped")],
  ];
}

/** A server on `store` (the SQLite file when undefined), set up with `overrides`, with the profiles `mine` and `theirs` and a caller scoped to each. */
export async function startWithScopedCallers(store: string | undefined, overrides: Partial<ServerConfig> = {}): Promise<ScopedCallers> {
  const server = await startTestServer(store === undefined ? overrides : { ...overrides, store });
  const root = await wideRoot(server.url, server.dataDir);
  async function caller(profileId: string): Promise<ScopedCaller> {
    const profile = await createProfileWith(root.operations, profileId, ProfileType.PERSONAL);
    const { delegation, token } = await root.delegations.issueDelegation({
      subject: `agent-of-${profileId}`,
      scope: { operationTypes: CALLER_TYPES, profiles: [profile], tools: ["*"], modelProviders: ["*"], budget: roomyBudget() },
    });
    return { profile, delegation: delegation!, token, clients: clientsFor(server.url, token) };
  }
  return { server, root, mine: await caller("mine"), theirs: await caller("theirs") };
}

/**
 * What an error tells its caller, with `name` (the resource it was asked about) written as
 * NAME: two refusals with equal shapes are indistinguishable but for the name the caller sent.
 */
export function errorShape(error: unknown, name: string) {
  const e = ConnectError.from(error);
  const info = e.findDetails(ErrorInfoSchema)[0];
  const anonymous = (text: string) => text.replaceAll(name, "NAME");
  return {
    code: Code[e.code],
    message: anonymous(e.rawMessage),
    reason: info?.reason,
    metadata: Object.fromEntries(Object.entries(info?.metadata ?? {}).map(([key, value]) => [key, anonymous(value)])),
  };
}
