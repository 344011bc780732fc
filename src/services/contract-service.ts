// agentmachine.v1.ContractService: thin — decode, call src/contract, respond.
import type { ServiceImpl } from "@connectrpc/connect";
import type { ContractService, ExecutionIsolation } from "../gen/agentmachine/v1/contract_service_pb.js";
import type { WorkspaceOperationContract } from "../gen/agentmachine/v1/contract_pb.js";
import { contractToJson } from "../model/mapping.js";
import { validateContractMessage, validateContractText } from "../contract/validate.js";

/** `isolation`: how this server confines executions, reported beside the contract (its `ambientAuthority: false`). */
export function contractService(ownContract: WorkspaceOperationContract, isolation: ExecutionIsolation): ServiceImpl<typeof ContractService> {
  const ownJson = JSON.stringify(contractToJson(ownContract), null, 2);
  return {
    validateContract(req) {
      // The oneof is required by the request's protovalidate rules, so one case is always set.
      const document = req.document;
      return document.case === "json" ? validateContractText(document.value) : validateContractMessage(document.value!);
    },
    getContract() {
      return { contract: ownContract, json: ownJson, executionIsolation: isolation };
    },
  };
}
