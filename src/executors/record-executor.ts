// Executes the operations whose work is a record in the store: profile.create,
// tool_grant.apply, tool_grant.revoke and model_provider.bind (execution.cancel the runner runs
// itself, src/lifecycle/cancel-command.ts). Admission (src/lifecycle/admission.ts) has already
// checked that targets exist and belong to the same profile.
import { create } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { StopCauseSchema, StopReason } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { StoreAccounts, StoreOperations } from "../store/store.js";
import type { Attempt, Executor, Outcome } from "./executor.js";

export interface RecordExecutorDeps {
  store: StoreOperations & StoreAccounts;
}

function failed(reason: StopReason, message: string): Outcome {
  return { kind: "failed", cause: create(StopCauseSchema, { reason, message }), retryable: false };
}

export class RecordExecutor implements Executor {
  constructor(private readonly deps: RecordExecutorDeps) {}

  async run({ operation }: Attempt): Promise<Outcome> {
    const spec = operation.spec?.kind;
    switch (spec?.case) {
      case "profileCreate":
        return {
          kind: "completed",
          message: `created ${operation.profile}`,
          artifact: create(ArtifactSchema, {
            kind: {
              case: "agentMachineProfile",
              value: { name: operation.profile, profileType: spec.value.profileType, displayName: spec.value.displayName },
            },
          }),
        };
      case "toolGrantApply":
        return {
          kind: "completed",
          message: `granted ${spec.value.tool}`,
          artifact: create(ArtifactSchema, {
            kind: { case: "toolGrantRecord", value: { tool: spec.value.tool, applyCommandRef: operation.name } },
          }),
        };
      case "toolGrantRevoke": {
        const grant = await this.deps.store.getOperation(spec.value.grant);
        const record = grant?.artifact?.kind.case === "toolGrantRecord" ? grant.artifact.kind.value : undefined;
        if (grant === undefined || record === undefined) return failed(StopReason.GRANT_NOT_FOUND, `${spec.value.grant} is not an applied tool grant`);
        if (record.revokeCommandRef !== "") return failed(StopReason.ALREADY_REVOKED, `${grant.name} was already revoked by ${record.revokeCommandRef}`);
        record.revokeCommandRef = operation.name;
        // The grant's state stays completed: revoking updates its artifact, not its lifecycle.
        const result = await this.deps.store.updateOperation({ operation: grant, expectedState: TaskState.COMPLETED });
        if (result.kind !== "updated") return failed(StopReason.GRANT_NOT_FOUND, `${grant.name} changed while being revoked`);
        return {
          kind: "completed",
          message: `revoked ${record.tool}`,
          artifact: create(ArtifactSchema, { kind: { case: "toolGrantRecord", value: record } }),
        };
      }
      case "modelProviderBind": {
        const profile = await this.deps.store.getProfile(operation.profile);
        return {
          kind: "completed",
          message: `bound ${spec.value.provider}`,
          artifact: create(ArtifactSchema, {
            kind: {
              case: "modelProviderBinding",
              value: {
                operationType: OperationType.MODEL_PROVIDER_BIND,
                profileType: profile?.profileType,
                provider: spec.value.provider,
              },
            },
          }),
        };
      }
      default:
        throw new Error(`RecordExecutor cannot run ${spec?.case ?? "an empty spec"}`);
    }
  }
}
