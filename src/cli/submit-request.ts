// `amctl submit`'s request: a full SubmitOperationRequest from `-f FILE` (proto JSON), or one
// spec flag for the common cases; the envelope flags (request id, profile, labels, budget)
// apply to both. Anything inconsistent is a usage error, before the server is asked.
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { create, fromJson, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import type { OperationSpecSchema } from "../gen/agentmachine/v1/operation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../gen/agentmachine/v1/operation_service_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";

export interface SubmitFlags {
  file?: string;
  requestId?: string;
  profile?: string;
  label?: Record<string, string>;
  wallClock?: number;
  profileCreate?: string;
  profileType?: ProfileType;
  displayName?: string;
  exec?: boolean;
  retry?: number;
  grantTool?: string;
  revokeGrant?: string;
  reason?: string;
  bindProvider?: string;
  endpoint?: string;
}

type Spec = NonNullable<MessageInitShape<typeof OperationSpecSchema>["spec"]>;

/** The spec flags: which one is given, and the spec it makes. */
function specChoices(flags: SubmitFlags, argv: string[]): { flag: string; given: boolean; spec: () => Spec }[] {
  return [
    {
      flag: "--profile-create",
      given: flags.profileCreate !== undefined,
      spec: () => ({ case: "profileCreate", value: { profileId: flags.profileCreate, profileType: flags.profileType, displayName: flags.displayName } })
    },
    {
      flag: "--exec",
      given: flags.exec === true,
      spec: () => ({ case: "executionStart", value: { argv, ...(flags.retry !== undefined ? { retryPolicy: { maxAttempts: flags.retry } } : {}) } })
    },
    { flag: "--grant-tool", given: flags.grantTool !== undefined, spec: () => ({ case: "toolGrantApply", value: { tool: flags.grantTool } }) },
    {
      flag: "--revoke-grant",
      given: flags.revokeGrant !== undefined,
      spec: () => ({ case: "toolGrantRevoke", value: { grant: flags.revokeGrant, reason: flags.reason ?? "" } })
    },
    {
      flag: "--bind-provider",
      given: flags.bindProvider !== undefined,
      spec: () => ({ case: "modelProviderBind", value: { provider: flags.bindProvider, endpoint: flags.endpoint ?? "" } })
    },
  ];
}

/** Flags that only mean something next to another one. */
function checkCompanions(flags: SubmitFlags, argv: string[]): void {
  const companions: [given: boolean, flag: string, needs: string, present: boolean][] = [
    [flags.profileType !== undefined, "--profile-type", "--profile-create", flags.profileCreate !== undefined],
    [flags.profileCreate !== undefined, "--profile-create", "--profile-type", flags.profileType !== undefined],
    [flags.displayName !== undefined, "--display-name", "--profile-create", flags.profileCreate !== undefined],
    [flags.retry !== undefined, "--retry", "--exec", flags.exec === true],
    [argv.length > 0, "a command after --", "--exec", flags.exec === true],
    [flags.exec === true, "--exec", "a command after -- (amctl submit --exec -- PROGRAM ARGS...)", argv.length > 0],
    [flags.reason !== undefined, "--reason", "--revoke-grant", flags.revokeGrant !== undefined],
    [flags.endpoint !== undefined, "--endpoint", "--bind-provider", flags.bindProvider !== undefined],
  ];
  for (const [given, flag, needs, present] of companions) {
    if (given && !present) throw new Error(`${flag} needs ${needs}`);
  }
}

async function readRequestFile(file: string): Promise<SubmitOperationRequest> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    return fromJson(SubmitOperationRequestSchema, JSON.parse(text) as JsonValue);
  } catch (error) {
    throw new Error(`${file} is not a SubmitOperationRequest in proto JSON: ${(error as Error).message}`);
  }
}

/** The request to send. Throws an Error (a usage error) when the flags do not make one. */
export async function buildSubmitRequest(flags: SubmitFlags, argv: string[]): Promise<SubmitOperationRequest> {
  checkCompanions(flags, argv);
  const given = specChoices(flags, argv).filter((choice) => choice.given);
  const names = given.map((choice) => choice.flag);
  if (flags.file !== undefined && given.length > 0) throw new Error(`-f takes the whole spec from the file; drop ${names.join(", ")}`);
  if (given.length > 1) throw new Error(`give one operation, not ${names.join(" and ")}`);
  if (flags.file === undefined && given.length === 0) {
    throw new Error("say what to submit: --profile-create, --exec, --grant-tool, --revoke-grant, --bind-provider or -f FILE");
  }
  const request =
    flags.file !== undefined ? await readRequestFile(flags.file) : create(SubmitOperationRequestSchema, { spec: { spec: given[0]!.spec() } });
  request.requestId = flags.requestId ?? (request.requestId || randomUUID());
  request.profile = flags.profile ?? request.profile;
  request.labels = { ...request.labels, ...flags.label };
  if (flags.wallClock !== undefined) {
    request.requestedBudget ??= create(BudgetSchema);
    request.requestedBudget.wallClockSeconds = BigInt(flags.wallClock);
  }
  return request;
}
