// The request digest of audit records: secret values are blanked before hashing, everything else
// counts.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { redactedRequestDigest } from "../../src/audit/request-digest.js";
import { SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { ReportUsageRequestSchema } from "../../src/gen/agentmachine/v1/runtime_service_pb.js";

const execution = (env: Record<string, string>, argv = ["run"]) =>
  create(SubmitOperationRequestSchema, { requestId: "r", profile: "profiles/p", spec: { kind: { case: "executionStart", value: { argv, env } } } });
const usage = (callTicket: string) => create(ReportUsageRequestSchema, { operation: "operations/a", callTicket, actualTokens: 5n });
const container = (env: Record<string, string>) =>
  create(SubmitOperationRequestSchema, { requestId: "r", profile: "profiles/p", spec: { kind: { case: "containerRun", value: { image: "i", env } } } });

describe("redactedRequestDigest", () => {
  it.each([
    [
      "execution env values",
      redactedRequestDigest(SubmitOperationRequestSchema, execution({ API_KEY: "s3cret" })),
      redactedRequestDigest(SubmitOperationRequestSchema, execution({ API_KEY: "other" })),
    ],
    [
      "container env values",
      redactedRequestDigest(SubmitOperationRequestSchema, container({ TOKEN: "s3cret" })),
      redactedRequestDigest(SubmitOperationRequestSchema, container({ TOKEN: "" })),
    ],
    ["a call ticket", redactedRequestDigest(ReportUsageRequestSchema, usage("t1")), redactedRequestDigest(ReportUsageRequestSchema, usage("t2"))],
  ])("ignores %s", (_what, a, b) => {
    expect(a).toBe(b);
  });

  it("counts everything else, env keys included, and leaves the request as it was", () => {
    const request = execution({ API_KEY: "s3cret" });
    const digest = redactedRequestDigest(SubmitOperationRequestSchema, request);
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    expect(redactedRequestDigest(SubmitOperationRequestSchema, execution({ OTHER_KEY: "s3cret" }))).not.toBe(digest);
    expect(redactedRequestDigest(SubmitOperationRequestSchema, execution({ API_KEY: "s3cret" }, ["run", "more"]))).not.toBe(digest);
    expect(request.spec!.kind.value).toMatchObject({ env: { API_KEY: "s3cret" } });
  });
});
