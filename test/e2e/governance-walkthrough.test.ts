// The whole governance path through the CLI, run for real: examples/governance.sh against an
// `amctl serve` child on a data dir prepared by `amctl init` (the operator's public key and the
// default policy bundles; the private key outside it, where `delegation root` finds it), as a
// fresh install would have it. Its credentials (the operator's root and the agent's child) are
// then canaries: none may appear in anything the server wrote — its log, the operations, the
// events, the audit records and checkpoints, the errors the script saw.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect, it } from "vitest";
import { AuditService, ListAuditRecordsResponseSchema, ListCheckpointsResponseSchema } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { ListOperationsResponseSchema, OperationService, WatchEventsResponseSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { bearer } from "../helpers/auth.js";
import { amctl, runExampleAgainst } from "../helpers/cli.js";
import { startChildServer, tempDir, type ChildServer } from "../helpers/server.js";

/** Everything the server holds about the run, as JSON text, read with `token`. */
async function everythingServed(url: string, token: string): Promise<string> {
  const transport = createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] });
  const operations = createClient(OperationService, transport);
  const audit = createClient(AuditService, transport);
  const texts: string[] = [];
  let pageToken = "";
  do {
    const page = await operations.listOperations({ pageSize: 1000, pageToken });
    texts.push(toJsonString(ListOperationsResponseSchema, page));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  // Every retained event, up to the first bookmark (sent once the stream has caught up).
  for await (const response of operations.watchEvents({ afterSequence: 0n }, { timeoutMs: 30_000 })) {
    if (response.kind.case === "bookmark") break;
    texts.push(toJsonString(WatchEventsResponseSchema, response));
  }
  do {
    const page = await audit.listAuditRecords({ pageSize: 1000, pageToken });
    texts.push(toJsonString(ListAuditRecordsResponseSchema, page));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  texts.push(toJsonString(ListCheckpointsResponseSchema, await audit.listCheckpoints({ pageSize: 1000 })));
  return texts.join("\n");
}

it("examples/governance.sh: init → root → agent delegation → policy dry run → grant → execution asking AuthorizeCall → overspend stopped → revoke; no credential in anything the server wrote", async () => {
  const dataDir = tempDir("amctl-walkthrough-");
  const work = tempDir("amctl-walkthrough-work-");
  expect((await amctl(["init", "--data-dir", dataDir])).code).toBe(0);
  const server: ChildServer = await startChildServer(["--policy", join(dataDir, "policies"), "--log-level", "debug"], { dataDir });
  let served = "";
  const stdout = await runExampleAgainst("governance.sh", server, { AMCTL_EXAMPLE_WORK: work }, async () => {
    served = await everythingServed(server.url, readFileSync(join(work, "root.jwt"), "utf8").trim());
  });
  expect(stdout).toMatch(/^toolGrant +allow +personal\.dev-tools /m);
  expect(stdout).toContain("denied: PERMISSION_DENIED OUT_OF_SCOPE");
  expect(stdout).toMatch(/denied: PERMISSION_DENIED POLICY_DENIED: the toolGrant gate denied this: rule no-matching-allow/);
  // The execution asked once for a tool and once for a model (500 estimated, 400 reported).
  expect(stdout).toContain('{"modelCalls":"1","tokens":"400","connectorCalls":"1"');
  expect(stdout).toContain('"reason":"STOP_REASON_BUDGET_EXHAUSTED"');
  expect(stdout).toContain('"dimension":"BUDGET_DIMENSION_TOKENS"');
  expect(stdout).toContain("revoked (1 delegation)");
  expect(stdout).toContain("# done");

  // The run left a trail: operations, events and audit records (denials included) were read.
  expect(served).toMatch(/"records":\[\{/);
  expect(served).toMatch(/"reason":"delegations\/[^}]*"denialCode":"UNAUTHENTICATED"/);
  expect(served).toContain('"denialCode":"RESOURCE_EXHAUSTED"');
  const written = [server.stderr(), stdout, served].join("\n");
  for (const file of ["root.jwt", "agent.jwt"]) {
    const credential = readFileSync(join(work, file), "utf8").trim();
    expect(credential.length).toBeGreaterThan(100);
    expect(written.includes(credential), `${file} appears in what the server wrote`).toBe(false);
    // Nor its signature alone (the part that makes it a credential).
    expect(written.includes(credential.split(".").at(-1)!), `${file}'s signature appears in what the server wrote`).toBe(false);
  }
}, 180_000);
