// `amctl policy check | list | apply`: what the policy gates would decide (a dry run of a submit
// or of a runtime call), the bundles in force, and replacing the bundle of a profile type.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import {
  ApplyPolicyBundleResponseSchema,
  EvaluatePolicyResponseSchema,
  ListPolicyBundlesResponseSchema,
  PolicyService,
  type EvaluatePolicyRequestSchema,
  type EvaluatePolicyResponse,
} from "../gen/agentmachine/v1/policy_service_pb.js";
import type { CallKind } from "../gen/agentmachine/v1/runtime_pb.js";
import { Code } from "../gen/google/rpc/code_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../model/mapping.js";
import { allPages, MAX_PAGE_SIZE } from "../model/all-pages.js";
import { serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";
import { contractName } from "./flags.js";
import { jsonLine } from "./format.js";
import { formatBundle, formatBundleTable, formatVerdict } from "./governance-format.js";
import { readText } from "./read-text.js";
import { callFlagsGiven, callKindFlag, runtimeCall, withCallOptions, type CallFlags } from "./runtime-call.js";
import { buildSubmitRequest, submitFlagsGiven, withSubmitOptions, type SubmitFlags } from "./submit-request.js";

interface Common {
  server: string;
  json?: boolean;
}

type CheckFlags = SubmitFlags & CallFlags & Common & { call?: CallKind };

type Subject = MessageInitShape<typeof EvaluatePolicyRequestSchema>["subject"];

/** What to evaluate: the operation the submit flags describe or, with --call, a runtime call in --profile. */
async function subjectOf(argv: string[], flags: CheckFlags): Promise<Subject> {
  if (flags.call === undefined) {
    const stray = callFlagsGiven(flags);
    if (stray.length > 0) throw new Error(`${stray.join(", ")} describe a runtime call: add --call`);
    return { case: "operation", value: await buildSubmitRequest(flags, argv) };
  }
  // A call is made in --profile; any other operation flag would be silently ignored, so it is refused.
  const stray = submitFlagsGiven(flags, argv).filter((flag) => flag !== "--profile");
  if (stray.length > 0) throw new Error(`--call checks a runtime call, not an operation: drop ${stray.join(", ")}`);
  if (flags.profile === undefined) throw new Error("--call needs --profile, the profile the call is made in");
  return { case: "call", value: { profile: flags.profile, call: runtimeCall(flags.call, flags) } };
}

/**
 * The error the request would get: status code and reason (its google.rpc.ErrorInfo's). A
 * gate's denial is its decision, printed below it; any other denial (scope, profile separation,
 * budget) has no decision, and says why in its message.
 */
function denialText({ denial }: EvaluatePolicyResponse): string {
  const info = denial?.details.map((detail) => anyUnpack(detail, ErrorInfoSchema)).find((unpacked) => unpacked !== undefined);
  return `${Code[denial?.code ?? Code.OK]} ${info?.reason ?? ""}: ${denial?.message ?? ""}`;
}

async function check(argv: string[], flags: CheckFlags): Promise<void> {
  const response = await serviceClient(PolicyService, flags.server).evaluatePolicy({ subject: await subjectOf(argv, flags) });
  console.log(flags.json ? jsonLine(EvaluatePolicyResponseSchema, response) : formatVerdict(response.allowed, denialText(response), response.decisions));
  if (!response.allowed) process.exitCode = EXIT_INVALID;
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command("policy").description("Policy bundles: the CEL rules of the policy gates, one bundle per profile type");

  withCallOptions(
    withSubmitOptions(policy.command("check")).option(
      "--call <kind>",
      "check a runtime call instead: model, connector or tool, made in --profile",
      callKindFlag,
    ),
  )
    .description(
      "Dry run: would this operation (the flags of amctl submit) or runtime call (--call) be allowed under your delegation, the profile rules and the policy gates? Nothing is stored and no budget is spent. Exit 0 allowed, 1 denied (or refused as invalid), 2 usage error or unreachable server.",
    )
    .addOption(serverOption())
    .option("--json", "print the EvaluatePolicyResponse as proto JSON")
    .addHelpText(
      "after",
      [
        "",
        "Examples:",
        "  amctl policy check --profile personal --grant-tool nmap",
        "  amctl policy check --call model --profile work --provider ollama --tokens 500",
      ].join("\n"),
    )
    .action(check);

  policy
    .command("list")
    .description("The bundle in force for each profile type: its version, digest, and who applied it when.")
    .addOption(serverOption())
    .option("--json", "print the ListPolicyBundlesResponse (sources included) as proto JSON")
    .action(async (options: Common) => {
      const client = serviceClient(PolicyService, options.server);
      const response = create(ListPolicyBundlesResponseSchema);
      for await (const page of allPages((pageToken) => client.listPolicyBundles({ pageSize: MAX_PAGE_SIZE, pageToken })))
        response.bundles.push(...page.bundles);
      console.log(options.json ? jsonLine(ListPolicyBundlesResponseSchema, response) : formatBundleTable(response.bundles));
    });

  policy
    .command("apply")
    .description(
      "Replace the bundle of a profile type with FILE. Your delegation must list the profile type in policy_profile_types; a bundle that does not compile is refused (exit 1, naming the rule) and the one in force stays.",
    )
    .argument("<file>", "the bundle (YAML, as in examples/policies)")
    .requiredOption("--profile-type <type>", `the profile type it governs: ${[...profileTypeNames.values()].join(", ")}`, contractName(profileTypeNames))
    .addOption(serverOption())
    .option("--request-id <id>", "idempotency key: the same id and file again store no second version (default: none)")
    .option("--json", "print the ApplyPolicyBundleResponse as proto JSON")
    .action(async (file: string, options: Common & { profileType: ProfileType; requestId?: string }) => {
      const source = await readText(file);
      const response = await serviceClient(PolicyService, options.server).applyPolicyBundle({
        profileType: options.profileType,
        source,
        requestId: options.requestId ?? "",
      });
      console.log(options.json ? jsonLine(ApplyPolicyBundleResponseSchema, response) : formatBundle(response.bundle!));
    });
}
