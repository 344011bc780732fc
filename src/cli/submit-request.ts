// `amctl submit`'s request: a full SubmitOperationRequest from `-f FILE` (proto JSON), or one
// spec flag for the common cases; the envelope flags (request id, profile, labels, budget)
// apply to both. Anything inconsistent is a usage error, before the server is asked. The
// flags are defined here once, for every command that takes an operation (`amctl submit`,
// `amctl policy check`).
import { randomUUID } from "node:crypto";
import { create, fromJson, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { InvalidArgumentError, Option, type Command } from "commander";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { ModelProviderApi, type MountSchema, type OperationSpecSchema } from "../gen/agentmachine/v1/operation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../gen/agentmachine/v1/operation_service_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../model/mapping.js";
import { budgetFlag, contractName, integerFlag, labelFlag, resourceName } from "./flags.js";
import type { BudgetDimensionName } from "../model/budget-dimensions.js";
import { readText } from "./read-text.js";

export interface SubmitFlags {
  file?: string;
  requestId?: string;
  profile?: string;
  label?: Record<string, string>;
  wallClock?: number;
  budget?: Partial<Record<BudgetDimensionName, bigint>>;
  profileCreate?: string;
  profileType?: ProfileType;
  displayName?: string;
  exec?: boolean;
  retry?: number;
  workerSelector?: Record<string, string>;
  mount?: MountInit[];
  grantTool?: string;
  revokeGrant?: string;
  reason?: string;
  bindProvider?: string;
  endpoint?: string;
  apiKeyRef?: string;
  providerApi?: string;
  providerModel?: string[];
}

/** The options that describe an operation; a fresh set for each command (commander owns what it adds). */
function submitOptions(): Option[] {
  return [
    new Option("-f, --file <request.json>", "a whole SubmitOperationRequest in proto JSON"),
    new Option("--request-id <id>", "idempotency key (default: a random UUID, shown in the output)"),
    new Option("--profile <profile>", "profiles/ID (or just ID) the operation belongs to").argParser(resourceName("profiles")),
    new Option("--label <key=value>", "a label (repeatable)").argParser(labelFlag),
    new Option("--wall-clock <seconds>", "requested wall-clock budget").argParser(integerFlag(1)),
    new Option(
      "--budget <dimension=n>",
      "a requested budget dimension, e.g. tokens=1000 (repeatable; the server default fills the others); with --profile-create: the profile's budget",
    ).argParser(budgetFlag),
    new Option("--profile-create <id>", "agent_machine.profile.create: the new profile's id"),
    new Option("--profile-type <type>", `with --profile-create: ${[...profileTypeNames.values()].join(", ")}`).argParser(contractName(profileTypeNames)),
    new Option("--display-name <text>", "with --profile-create: a human-readable name"),
    new Option("--exec", "agent_machine.execution.start: run the program after --"),
    new Option("--retry <attempts>", "with --exec: total attempts (retry_policy.max_attempts)").argParser(integerFlag(1)),
    new Option("--worker-selector <key=value>", "with --exec, on a server with remote workers: a label the worker must carry (repeatable)").argParser(
      labelFlag,
    ),
    new Option(
      "--mount <host:path[:rw]>",
      "with --exec: a host path (absolute, read-only; or relative: a directory of the workspace, which :rw makes writable) seen inside at PATH (repeatable)",
    ).argParser(collectMount),
    new Option("--grant-tool <tool>", "agent_machine.tool_grant.apply"),
    new Option("--revoke-grant <operation>", "agent_machine.tool_grant.revoke of this grant operation").argParser(resourceName("operations")),
    new Option("--reason <text>", "with --revoke-grant: why"),
    new Option("--bind-provider <name>", "agent_machine.model_provider.bind"),
    new Option("--endpoint <url>", "with --bind-provider: the provider's endpoint"),
    new Option(
      "--api-key-ref <ref>",
      "with --bind-provider: where the server finds the provider's key (env:AMCTL_PROVIDER_NAME or file:NAME in DATA_DIR/provider-keys)",
    ),
    new Option("--provider-api <api>", "with --bind-provider: the wire format the provider speaks").choices(["openai", "anthropic", "ollama"]),
    new Option("--provider-model <model>", "with --bind-provider: a model the gateway routes to this provider (repeatable)").argParser(
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    ),
  ];
}

/** Adds the operation flags, and the program after `--` of `--exec`, to `command`. */
export function withSubmitOptions(command: Command): Command {
  for (const option of submitOptions()) command.addOption(option);
  return command.argument("[argv...]", "with --exec: the program and its arguments, after --");
}

/** The operation flags that were given, as spelled on the command line (`--grant-tool`, …). */
export function submitFlagsGiven(flags: SubmitFlags, argv: string[]): string[] {
  const given = submitOptions()
    .filter((option) => flags[option.attributeName() as keyof SubmitFlags] !== undefined)
    .map((option) => option.long!);
  return argv.length > 0 ? [...given, "a command after --"] : given;
}

type MountInit = MessageInitShape<typeof MountSchema>;

/** `HOST:PATH` or `HOST:PATH:rw`, collected; the server judges the paths. */
function collectMount(text: string, previous: MountInit[] | undefined): MountInit[] {
  const match = /^([^:]+):([^:]+)(:rw)?$/.exec(text);
  if (match === null) throw new InvalidArgumentError(`expected HOST:PATH or HOST:PATH:rw, got ${text}`);
  return [...(previous ?? []), { hostPath: match[1], path: match[2], readWrite: match[3] !== undefined }];
}

type Spec = NonNullable<MessageInitShape<typeof OperationSpecSchema>["kind"]>;

/** The spec flags: which one is given, and the spec it makes. */
function specChoices(flags: SubmitFlags, argv: string[]): { flag: string; given: boolean; spec: () => Spec }[] {
  return [
    {
      flag: "--profile-create",
      given: flags.profileCreate !== undefined,
      spec: () => ({ case: "profileCreate", value: { profileId: flags.profileCreate, profileType: flags.profileType, displayName: flags.displayName } }),
    },
    {
      flag: "--exec",
      given: flags.exec === true,
      spec: () => ({
        case: "executionStart",
        value: {
          argv,
          ...(flags.retry !== undefined ? { retryPolicy: { maxAttempts: flags.retry } } : {}),
          ...(flags.workerSelector !== undefined ? { workerSelector: flags.workerSelector } : {}),
          ...(flags.mount !== undefined ? { mounts: flags.mount } : {}),
        },
      }),
    },
    { flag: "--grant-tool", given: flags.grantTool !== undefined, spec: () => ({ case: "toolGrantApply", value: { tool: flags.grantTool } }) },
    {
      flag: "--revoke-grant",
      given: flags.revokeGrant !== undefined,
      spec: () => ({ case: "toolGrantRevoke", value: { grant: flags.revokeGrant, reason: flags.reason ?? "" } }),
    },
    {
      flag: "--bind-provider",
      given: flags.bindProvider !== undefined,
      spec: () => ({
        case: "modelProviderBind",
        value: {
          provider: flags.bindProvider,
          endpoint: flags.endpoint ?? "",
          apiKeyRef: flags.apiKeyRef ?? "",
          api: providerApis[flags.providerApi ?? ""] ?? ModelProviderApi.UNSPECIFIED,
          models: flags.providerModel ?? [],
        },
      }),
    },
  ];
}

const providerApis: Record<string, ModelProviderApi> = {
  openai: ModelProviderApi.OPENAI,
  anthropic: ModelProviderApi.ANTHROPIC,
  ollama: ModelProviderApi.OLLAMA,
};

/** Flags that only mean something next to another one. */
function checkCompanions(flags: SubmitFlags, argv: string[]): void {
  const companions: [given: boolean, flag: string, needs: string, present: boolean][] = [
    [flags.profileType !== undefined, "--profile-type", "--profile-create", flags.profileCreate !== undefined],
    [flags.profileCreate !== undefined, "--profile-create", "--profile-type", flags.profileType !== undefined],
    [flags.displayName !== undefined, "--display-name", "--profile-create", flags.profileCreate !== undefined],
    [flags.retry !== undefined, "--retry", "--exec", flags.exec === true],
    [flags.workerSelector !== undefined, "--worker-selector", "--exec", flags.exec === true],
    [flags.mount !== undefined, "--mount", "--exec", flags.exec === true],
    [argv.length > 0, "a command after --", "--exec", flags.exec === true],
    [flags.exec === true, "--exec", "a command after -- (amctl submit --exec -- PROGRAM ARGS...)", argv.length > 0],
    [flags.reason !== undefined, "--reason", "--revoke-grant", flags.revokeGrant !== undefined],
    [flags.endpoint !== undefined, "--endpoint", "--bind-provider", flags.bindProvider !== undefined],
    [flags.apiKeyRef !== undefined, "--api-key-ref", "--bind-provider", flags.bindProvider !== undefined],
    [flags.providerApi !== undefined, "--provider-api", "--bind-provider", flags.bindProvider !== undefined],
    [flags.providerModel !== undefined, "--provider-model", "--bind-provider", flags.bindProvider !== undefined],
  ];
  for (const [given, flag, needs, present] of companions) {
    if (given && !present) throw new Error(`${flag} needs ${needs}`);
  }
}

async function readRequestFile(file: string): Promise<SubmitOperationRequest> {
  const text = await readText(file);
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
  const request = flags.file !== undefined ? await readRequestFile(flags.file) : create(SubmitOperationRequestSchema, { spec: { kind: given[0]!.spec() } });
  request.requestId = flags.requestId ?? (request.requestId || randomUUID());
  request.profile = flags.profile ?? request.profile;
  request.labels = { ...request.labels, ...flags.label };
  const budget = { ...flags.budget, ...(flags.wallClock !== undefined ? { wallClockSeconds: BigInt(flags.wallClock) } : {}) };
  if (Object.keys(budget).length > 0) {
    const spec = request.spec?.kind;
    // A new profile's budget is part of its spec; any other operation requests one for itself.
    const target = spec?.case === "profileCreate" ? (spec.value.budget ??= create(BudgetSchema)) : (request.requestedBudget ??= create(BudgetSchema));
    Object.assign(target, budget);
  }
  return request;
}
