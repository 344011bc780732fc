// agentmachine.v1.ProfileService: the separation rules, as enforced (src/governance/profile-rules.ts).
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { codeName } from "../api/errors.js";
import { type ProfileService, SeparationRuleSchema } from "../gen/agentmachine/v1/profile_service_pb.js";
import { rulesConcerning } from "../governance/profile-rules.js";

export function profileService(): ServiceImpl<typeof ProfileService> {
  return {
    explainSeparation({ profileTypes }) {
      const rules = rulesConcerning(profileTypes).map((rule) =>
        create(SeparationRuleSchema, {
          id: rule.id,
          description: rule.description,
          profileTypes: [...rule.profileTypes],
          enforcedAt: [...rule.enforcedAt],
          violationCode: codeName(rule.code),
        }),
      );
      return { rules };
    },
  };
}
