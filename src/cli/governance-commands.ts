// `amctl init`, `amctl delegation root|issue|revoke|list|show`, `amctl whoami`: the operator's
// key (and the default policy bundles), the roots it signs offline, and the delegations a
// server issues below them.
import { existsSync } from "node:fs";
import { isAbsolute, normalize } from "node:path";
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Command, InvalidArgumentError } from "commander";
import { monotonicFactory } from "ulid";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { DelegationScopeSchema, type Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import {
  DelegationService,
  IssueDelegationResponseSchema,
  ListDelegationsResponseSchema,
  WhoAmIResponseSchema,
} from "../gen/agentmachine/v1/delegation_service_pb.js";
import { DelegationSchema } from "../gen/agentmachine/v1/delegation_pb.js";
import type { OperationType, ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { operationTypeNames, profileTypeNames } from "../model/mapping.js";
import { ANY } from "../governance/attenuation.js";
import type { BudgetDimensionName } from "../model/budget-dimensions.js";
import { signCredential } from "../governance/credentials.js";
import {
  assertOutsideDataDir,
  createOperatorKey,
  defaultPrivateKeyFile,
  moveKeyHint,
  moveLegacyOperatorKey,
  operatorKeyFiles,
  readOperatorSigningKey,
} from "../governance/operator-key.js";
import { allPages, MAX_PAGE_SIZE } from "../model/all-pages.js";
import { defaultConfig } from "../config/config.js";
import { serverOption, serviceClient } from "./client.js";
import { writeDefaultPolicies } from "./default-policies.js";
import { budgetFlag, collect, contractName, resourceName } from "./flags.js";
import { jsonLine } from "./format.js";

const nextId = monotonicFactory();

/** `90s`, `30m`, `24h`, `7d` → milliseconds. */
function durationFlag(text: string): number {
  const match = /^(\d+)(s|m|h|d)$/.exec(text);
  if (match === null) throw new InvalidArgumentError("must be a duration such as 90s, 30m, 24h or 7d");
  return Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "s" | "m" | "h" | "d"];
}

interface ScopeFlags {
  operationType?: OperationType[];
  profile?: string[];
  tool?: string[];
  provider?: string[];
  budget?: Partial<Record<BudgetDimensionName, bigint>>;
  mayDelegate?: boolean;
  policyProfileType?: ProfileType[];
  workerProfile?: string[];
  auditRead?: boolean;
  mountPrefix?: string[];
}

function withScopeFlags(command: Command, unset: string): Command {
  return command
    .option("--operation-type <type>", `an operation type it allows, repeatable (${unset})`, collect(contractName(operationTypeNames)))
    .option("--profile <profile>", `a profile it allows (profiles/ID or "*"), repeatable (${unset})`, collect(resourceOrAny("profiles")))
    .option("--tool <tool>", `a tool it allows (or "*"), repeatable (${unset})`, collect(String))
    .option("--provider <provider>", `a model provider it allows (or "*"), repeatable (${unset})`, collect(String))
    .option(
      "--budget <dimension=n>",
      "a budget dimension, repeatable (a root's unset dimensions: 100 times the server's default execution budget, 16 at once; a child's: 0)",
      budgetFlag,
    )
    .option("--may-delegate", "it may issue child delegations")
    .option(
      "--policy-profile-type <type>",
      `a profile type whose policy bundle it may replace (amctl policy apply), repeatable (${unset})`,
      collect(contractName(profileTypeNames)),
    )
    .option(
      "--worker-profile <profile>",
      `a profile whose executions it may run as a remote worker (profiles/ID or "*"), repeatable (${unset})`,
      collect(resourceOrAny("profiles")),
    )
    .option("--audit-read", `it may read the audit log (${unset === "default: none" ? "default: no" : "a root: yes"})`)
    .option(
      "--mount-prefix <path>",
      'a host path under which it may mount into executions and containers (absolute, or "*"), repeatable (default: none, a root\'s too)',
      collect(mountPrefixFlag),
    );
}

function mountPrefixFlag(text: string): string {
  if (text !== ANY && !isAbsolute(text)) throw new InvalidArgumentError(`a mount prefix is an absolute path or "*": ${text}`);
  return text === ANY ? ANY : normalize(text).replace(/(.)\/$/, "$1");
}

function resourceOrAny(collection: string) {
  const name = resourceName(collection);
  return (text: string): string => (text === ANY ? ANY : name(text));
}

/**
 * What a root may spend when the operator does not say: room for a hundred executions of the
 * server's default budget, sixteen at once — enough to try things, small enough to notice.
 */
function rootDefaultBudget() {
  const budget = clone(BudgetSchema, defaultConfig.defaultBudget);
  for (const dimension of ["modelCalls", "tokens", "connectorCalls", "cpuGpuComputeSeconds", "wallClockSeconds"] as const) budget[dimension] *= 100n;
  budget.agentConcurrency = 16n;
  return budget;
}

/** The scope the flags describe; `everything` fills unset lists with "any" (for roots). */
function scopeFrom(flags: ScopeFlags, everything: boolean): MessageInitShape<typeof DelegationScopeSchema> {
  const any = everything ? [ANY] : [];
  return {
    operationTypes: flags.operationType ?? (everything ? [...operationTypeNames.keys()] : []),
    profiles: flags.profile ?? any,
    tools: flags.tool ?? any,
    modelProviders: flags.provider ?? any,
    budget: Object.assign(everything ? rootDefaultBudget() : create(BudgetSchema), flags.budget),
    mayDelegate: flags.mayDelegate ?? false,
    policyProfileTypes: flags.policyProfileType ?? (everything ? [...profileTypeNames.keys()] : []),
    workerProfiles: flags.workerProfile ?? any,
    auditRead: flags.auditRead ?? everything,
    // Never "any" by default, not even for a root: mounting host paths is granted by name.
    mountPrefixes: flags.mountPrefix ?? [],
  };
}

function describe(delegation: Delegation): string {
  const scope = delegation.scope;
  const until = delegation.expireTime ? timestampDate(delegation.expireTime).toISOString() : "?";
  const state = delegation.revokeTime ? `revoked (${delegation.revokeReason})` : `valid until ${until}`;
  return [
    `${delegation.name}  ${delegation.subject}  ${state}`,
    `  parent: ${delegation.parent || "(root)"}`,
    `  operation types: ${scope?.operationTypes.map((t) => operationTypeNames.get(t)).join(", ") || "(none)"}`,
    `  profiles: ${scope?.profiles.join(", ") || "(none)"}  tools: ${scope?.tools.join(", ") || "(none)"}  providers: ${scope?.modelProviders.join(", ") || "(none)"}`,
    `  may delegate: ${scope?.mayDelegate ? "yes" : "no"}  policy of: ${scope?.policyProfileTypes.map((t) => profileTypeNames.get(t)).join(", ") || "(none)"}`,
    `  worker for: ${scope?.workerProfiles.join(", ") || "(none)"}  audit read: ${scope?.auditRead ? "yes" : "no"}`,
    `  mounts under: ${scope?.mountPrefixes.join(", ") || "(none)"}`,
  ].join("\n");
}

/** The operator key `delegation root` signs with: --key, or the per-user file `amctl init` wrote for the data dir. */
async function operatorSigningKey(options: { key?: string; dataDir: string }) {
  const file = options.key ?? defaultPrivateKeyFile(options.dataDir);
  if (!existsSync(file)) {
    if (options.key !== undefined) throw new Error(`no operator private key at ${file} (--key)`);
    const legacy = operatorKeyFiles(options.dataDir).legacyPrivateKey;
    const older = existsSync(legacy)
      ? ` The data dir still holds one from an older amctl init (${legacy}), in reach of its executions: ${moveKeyHint(options.dataDir)}.`
      : "";
    throw new Error(
      `no operator private key for the data dir ${options.dataDir}: looked in ${file}, where \`amctl init --data-dir ${options.dataDir}\` puts it by default.${older} Pass --key FILE for a key kept elsewhere (amctl init --key-out FILE), or --data-dir DIR for another data dir.`,
    );
  }
  try {
    return await readOperatorSigningKey(file);
  } catch (error) {
    throw new Error(`cannot use ${file} as the operator private key: ${(error as Error).message}`);
  }
}

export function registerGovernanceCommands(program: Command): void {
  program
    .command("init")
    .description(
      "Create the operator key pair: the public key in DATA_DIR/operator/operator.pub (the server's trust anchor), the private key (mode 0600) outside the data dir, at --key-out FILE or the per-user place for the data dir ($AMCTL_CONFIG_DIR, else $XDG_CONFIG_HOME/amctl, else ~/.config/amctl; then operator-keys/<hash of the data dir's path>.key). Copy the default policy bundles (examples/policies) into DATA_DIR/policies, keeping files already there.",
    )
    .option("--data-dir <dir>", "the server's data dir", defaultConfig.dataDir)
    .option("--key-out <file>", "where to write the operator private key (never inside the data dir, never over an existing file; default: the per-user place)")
    .option("--move-key", "only move the private key an older amctl init left in DATA_DIR/operator/operator.key to --key-out FILE or the per-user place")
    .action((options: { dataDir: string; keyOut?: string; moveKey?: boolean }) => {
      const keyFile = options.keyOut ?? defaultPrivateKeyFile(options.dataDir);
      const found = options.keyOut === undefined ? "`amctl delegation root` finds it there" : "pass it to `amctl delegation root --key`";
      if (options.moveKey) {
        const moved = moveLegacyOperatorKey(options.dataDir, keyFile);
        console.log(`operator private key: ${moved.privateKey}  (moved from ${moved.from}; mode 0600; ${found})`);
        console.log(`operator public key:  ${moved.publicKey}  (the server's trust anchor, unchanged)`);
        return;
      }
      assertOutsideDataDir(options.dataDir, keyFile); // before anything is written
      // The bundles first: a data dir made before init wrote them gets them from a second run,
      // whose key step then refuses, as ever, to replace the key.
      const policies = writeDefaultPolicies(options.dataDir);
      for (const file of policies.written) console.log(`policy bundle: ${file}`);
      for (const file of policies.kept) console.log(`policy bundle: ${file}  (already there, kept)`);
      const files = createOperatorKey(options.dataDir, keyFile);
      console.log(`operator private key: ${files.privateKey}  (mode 0600, outside the data dir; ${found}; keep it offline if you can)`);
      console.log(`operator public key:  ${files.publicKey}  (the server's trust anchor)`);
    });

  const delegation = program.command("delegation").description("Delegations: the only way to be authorized");

  withScopeFlags(
    delegation
      .command("root")
      .description("Sign a root delegation offline with the operator key; prints the credential.")
      .option("--key <file>", "the operator private key (default: where amctl init put it for --data-dir)")
      .option("--data-dir <dir>", "the data dir whose operator key to use when --key is not given", defaultConfig.dataDir)
      .option("--subject <subject>", "who holds it", "operator")
      .option("--ttl <duration>", "how long it is valid", durationFlag, durationFlag("24h")),
    "default: all",
  ).action(async (options: ScopeFlags & { key?: string; dataDir: string; subject: string; ttl: number }) => {
    const now = Date.now();
    console.log(
      await signCredential(await operatorSigningKey(options), {
        id: nextId(),
        subject: options.subject,
        scope: create(DelegationScopeSchema, scopeFrom(options, true)),
        notBefore: new Date(now),
        expires: new Date(now + options.ttl),
      }),
    );
  });

  withScopeFlags(
    delegation
      .command("issue")
      .description("Ask the server for a child of your delegation (never wider than yours); prints the credential.")
      .requiredOption("--subject <subject>", "who will hold it")
      .option("--ttl <duration>", "how long it is valid (at most as long as yours)", durationFlag)
      .option("--request-id <id>", "idempotency key: the same id and flags again get the same delegation and credential (default: none)")
      .option("--json", "print the whole response")
      .addOption(serverOption()),
    "default: none",
  ).action(async (options: ScopeFlags & { subject: string; ttl?: number; requestId?: string; json?: boolean; server: string }) => {
    const response = await serviceClient(DelegationService, options.server).issueDelegation({
      requestId: options.requestId ?? "",
      subject: options.subject,
      scope: scopeFrom(options, false),
      ...(options.ttl !== undefined ? { ttl: durationFromMs(options.ttl) } : {}),
    });
    console.log(options.json ? jsonLine(IssueDelegationResponseSchema, response) : response.token);
  });

  delegation
    .command("revoke")
    .description("Revoke a delegation in your subtree, and every delegation below it.")
    .argument("<name>", "delegations/ID", resourceName("delegations"))
    .option("--reason <text>", "why")
    .addOption(serverOption())
    .action(async (name: string, options: { reason?: string; server: string }) => {
      const { revokedCount } = await serviceClient(DelegationService, options.server).revokeDelegation({ name, reason: options.reason ?? "" });
      console.log(`${name}: revoked (${revokedCount} delegation${revokedCount === 1 ? "" : "s"})`);
    });

  delegation
    .command("list")
    .description("Your delegation and those below it (every page).")
    .option("--all", "include revoked and expired ones")
    .option("--json", "print the whole response (the pages in one)")
    .addOption(serverOption())
    .action(async (options: { all?: boolean; json?: boolean; server: string }) => {
      const client = serviceClient(DelegationService, options.server);
      const response = create(ListDelegationsResponseSchema);
      for await (const page of allPages((pageToken) => client.listDelegations({ includeInactive: options.all ?? false, pageSize: MAX_PAGE_SIZE, pageToken }))) {
        response.delegations.push(...page.delegations);
        Object.assign(response.remainingBudgets, page.remainingBudgets);
      }
      console.log(options.json ? jsonLine(ListDelegationsResponseSchema, response) : response.delegations.map(describe).join("\n"));
    });

  delegation
    .command("show")
    .description("One delegation in your subtree.")
    .argument("<name>", "delegations/ID", resourceName("delegations"))
    .option("--json", "print it as JSON")
    .addOption(serverOption())
    .action(async (name: string, options: { json?: boolean; server: string }) => {
      const { delegation: found } = await serviceClient(DelegationService, options.server).getDelegation({ name });
      console.log(options.json ? jsonLine(DelegationSchema, found!) : describe(found!));
    });

  program
    .command("whoami")
    .description("Your delegation and its chain up to the root.")
    .option("--json", "print the whole response")
    .addOption(serverOption())
    .action(async (options: { json?: boolean; server: string }) => {
      const response = await serviceClient(DelegationService, options.server).whoAmI({});
      console.log(options.json ? jsonLine(WhoAmIResponseSchema, response) : [response.delegation!, ...response.chain].map(describe).join("\n"));
    });
}
