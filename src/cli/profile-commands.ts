// `amctl profile explain`: the rules that keep profiles apart, and where the server enforces
// each, from the server's own table (the one it enforces, so the two cannot disagree).
import type { Command } from "commander";
import { ExplainSeparationResponseSchema, ProfileService } from "../gen/agentmachine/v1/profile_service_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../model/mapping.js";
import { serverOption, serviceClient } from "./client.js";
import { collect, contractName } from "./flags.js";
import { jsonLine } from "./format.js";
import { formatSeparationRule } from "./governance-format.js";

export function registerProfileCommands(program: Command): void {
  const profile = program.command("profile").description("Profiles and what keeps them apart");

  profile
    .command("explain")
    .description("The separation rules that concern any of the given profile types (every rule when none is given), each with where the server enforces it.")
    .argument("[types...]", [...profileTypeNames.values()].join(", "), collect(contractName(profileTypeNames)))
    .addOption(serverOption())
    .option("--json", "print the ExplainSeparationResponse as proto JSON")
    .action(async (profileTypes: ProfileType[] | undefined, options: { server: string; json?: boolean }) => {
      const response = await serviceClient(ProfileService, options.server).explainSeparation({ profileTypes });
      console.log(options.json ? jsonLine(ExplainSeparationResponseSchema, response) : response.rules.map(formatSeparationRule).join("\n\n"));
    });
}
