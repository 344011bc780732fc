// `amctl call model | connector | tool | report`: for an agent inside an execution, to ask before
// each call it makes and to report what a model call really used. The executor hands every
// attempt AMCTL_SERVER, AMCTL_TOKEN (the attempt's own execution credential: RuntimeService
// accepts no other for the operation) and AMCTL_OPERATION, so inside an execution no flag but
// the call's own is needed.
import { Option, type Command } from "commander";
import {
  AuthorizeCallResponseSchema,
  ReportUsageResponseSchema,
  RuntimeService,
  type AuthorizeCallResponse,
} from "../gen/agentmachine/v1/runtime_service_pb.js";
import { BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import { CallKind } from "../gen/agentmachine/v1/runtime_pb.js";
import { serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";
import { integerFlag, resourceName } from "./flags.js";
import { formatFields, jsonLine } from "./format.js";
import { dimensionName, formatBudget, formatVerdict } from "./governance-format.js";
import { callKinds, runtimeCall, withCallKindOptions, type CallFlags } from "./runtime-call.js";

interface Common {
  server: string;
  operation: string;
  json?: boolean;
}

function operationOption(): Option {
  return new Option("--operation <operation>", "the running operation, operations/ID")
    .env("AMCTL_OPERATION")
    .argParser(resourceName("operations"))
    .makeOptionMandatory();
}

/** The commands' shared options: where the server is, which operation, and the output. */
function withCallContext(command: Command, json: string): Command {
  return command.addOption(serverOption()).addOption(operationOption()).option("--json", json);
}

function formatAuthorization(response: AuthorizeCallResponse): string {
  return [
    formatVerdict(response.allowed, response.denialReason, response.decisions),
    formatFields([
      ["exhausted", response.exhaustedDimension === BudgetDimension.UNSPECIFIED ? "" : dimensionName(response.exhaustedDimension)],
      ["remaining", formatBudget(response.remaining)],
      ["ticket", response.callTicket],
    ]),
  ].join("\n");
}

export function registerCallCommands(program: Command): void {
  const call = program
    .command("call")
    .description(
      "Inside an execution: ask the server before each model, connector or tool call (AMCTL_SERVER, AMCTL_TOKEN and AMCTL_OPERATION come from the executor)",
    );

  for (const spelling of callKinds) {
    const prints =
      spelling.kind === CallKind.MODEL ? "the verdict, the remaining budget and the ticket for amctl call report" : "the verdict and the remaining budget";
    withCallContext(
      withCallKindOptions(call.command(spelling.name), spelling).description(
        `Ask to make one ${spelling.name} call; if allowed it is charged to the operation's budget. Prints ${prints}. Exit 0 allowed, 1 denied.`,
      ),
      "print the AuthorizeCallResponse as proto JSON",
    ).action(async (options: CallFlags & Common) => {
      const response = await serviceClient(RuntimeService, options.server).authorizeCall({
        operation: options.operation,
        call: runtimeCall(spelling.kind, options),
      });
      console.log(options.json ? jsonLine(AuthorizeCallResponseSchema, response) : formatAuthorization(response));
      if (!response.allowed) process.exitCode = EXIT_INVALID;
    });
  }

  withCallContext(
    call
      .command("report")
      .description(
        "Report the tokens a model call really used, once per ticket. Exit 0 within budget, 1 when the usage exhausted the budget (the task is ended).",
      )
      .requiredOption("--ticket <ticket>", "the ticket amctl call model printed")
      .requiredOption("--tokens <n>", "the tokens the call used, prompt and completion", integerFlag()),
    "print the ReportUsageResponse as proto JSON",
  ).action(async (options: Common & { ticket: string; tokens: number }) => {
    const response = await serviceClient(RuntimeService, options.server).reportUsage({
      operation: options.operation,
      callTicket: options.ticket,
      actualTokens: BigInt(options.tokens),
    });
    console.log(
      options.json
        ? jsonLine(ReportUsageResponseSchema, response)
        : formatFields([
            ["budget", response.withinBudget ? "within" : "exhausted: the task is ended"],
            ["remaining", formatBudget(response.remaining)],
          ]),
    );
    if (!response.withinBudget) process.exitCode = EXIT_INVALID;
  });
}
