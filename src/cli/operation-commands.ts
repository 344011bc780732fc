// `amctl submit | get | list | cancel | watch`: operations on a running server. Every command
// prints for people by default and proto JSON with `--json`; a server's refusal reaches
// main.ts as a ConnectError (report-error.ts decides the message and the exit code).
import { toJson } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { OperationEventSchema } from "../gen/agentmachine/v1/event_pb.js";
import { OperationSchema } from "../gen/agentmachine/v1/operation_pb.js";
import {
  CancelOperationResponseSchema,
  GetOperationResponseSchema,
  SubmitOperationResponseSchema,
  WatchEventsResponseSchema,
  type OperationService,
} from "../gen/agentmachine/v1/operation_service_pb.js";
import { type EventType, OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { eventTypeNames, operationTypeNames, taskStateNames } from "../model/mapping.js";
import { operationClient, serverOption } from "./client.js";
import { EXIT_INVALID } from "./exit-codes.js";
import { collect, contractName, integerFlag, labelFlag, resourceName, sequenceFlag } from "./flags.js";
import { untilInterrupted } from "./follow.js";
import { followEveryAttempt } from "./logs-command.js";
import { causeText, formatEvent, formatOperation, formatOperationTable, jsonLine, stateName } from "./format.js";
import { buildSubmitRequest, withSubmitOptions, type SubmitFlags } from "./submit-request.js";

type OperationClient = Client<typeof OperationService>;

interface Common {
  server: string;
  json?: boolean;
}

/** Options that filter `list` and `watch`. */
interface FilterFlags<Type> {
  type?: Type[];
  state?: TaskState[];
  profile?: string;
  label?: Record<string, string>;
}

type WatchType = { operationType: OperationType } | { eventType: EventType };

/** `watch --type` takes either kind of type: their contract spellings never overlap. */
function watchType(text: string): WatchType {
  const operationType = [...operationTypeNames].find(([, name]) => name === text)?.[0];
  return operationType !== undefined ? { operationType } : { eventType: contractName(eventTypeNames)(text) };
}

const operationArgument = (command: Command): Command => command.argument("<operation>", "operations/ID (or just ID)", resourceName("operations"));

function withFilterOptions(command: Command, typeHelp: string, parseType: (text: string) => unknown): Command {
  return command
    .option("--type <type>", `${typeHelp} (repeatable)`, collect(parseType))
    .option("--state <state>", `${[...taskStateNames.values()].join(", ")} (repeatable)`, collect(contractName(taskStateNames)))
    .option("--profile <profile>", "profiles/ID (or just ID)", resourceName("profiles"))
    .option("--label <key=value>", "a label the operation carries (repeatable)", labelFlag);
}

/** Follows one operation's events from `after` to its terminal event. */
async function followOperation(client: OperationClient, name: string, afterSequence: bigint, json: boolean, signal?: AbortSignal): Promise<void> {
  for await (const { event } of client.watchOperation({ name, afterSequence }, { signal })) {
    if (event !== undefined) console.log(json ? jsonLine(OperationEventSchema, event) : formatEvent(event));
  }
}

async function submit(argv: string[], options: SubmitFlags & Common & { wait?: boolean; followOutput?: boolean }): Promise<void> {
  const request = await buildSubmitRequest(options, argv);
  const client = operationClient(options.server);
  const response = await client.submitOperation(request);
  const operation = response.operation!;
  // With --follow-output, stdout carries the program's output alone; what amctl says goes to stderr.
  const followOutput = options.followOutput === true && (operation.type === OperationType.EXECUTION_START || operation.type === OperationType.CONTAINER_RUN);
  const say = followOutput ? console.error : console.log;
  say(
    options.json
      ? jsonLine(SubmitOperationResponseSchema, response)
      : `${formatOperation(operation)}${response.created ? "" : "\n(already submitted with this request id)"}`,
  );
  if (!options.wait && !options.followOutput) return;
  if (followOutput) {
    const over = async (attempt: number) => {
      const current = (await client.getOperation({ name: operation.name })).operation!;
      return [TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED].includes(current.state) && current.attempt <= attempt;
    };
    await followEveryAttempt(options.server, operation.name, over);
  } else {
    await followOperation(client, operation.name, 0n, options.json === true);
  }
  const final = (await client.getOperation({ name: operation.name })).operation!;
  if (!options.json) say(`${final.name}: ${stateName(final)}${final.stopCause ? ` (${causeText(final.stopCause)})` : ""}`);
  if (final.state !== TaskState.COMPLETED) process.exitCode = EXIT_INVALID;
}

async function list(options: FilterFlags<OperationType> & Common & { pageSize?: number; pageToken?: string; all?: boolean }): Promise<void> {
  const client = operationClient(options.server);
  const filter = { types: options.type, states: options.state, profile: options.profile, labels: options.label };
  const operations = [];
  let pageToken = options.pageToken ?? "";
  do {
    const page = await client.listOperations({ pageSize: options.pageSize, pageToken, filter });
    operations.push(...page.operations);
    pageToken = page.nextPageToken;
  } while (options.all && pageToken !== "");
  console.log(options.json ? JSON.stringify(operations.map((op) => toJson(OperationSchema, op))) : formatOperationTable(operations));
  if (pageToken !== "") console.error(`more: --all, or --page-token ${pageToken}`);
}

async function watch(operation: string | undefined, options: FilterFlags<WatchType> & Common & { after?: bigint }): Promise<void> {
  const client = operationClient(options.server);
  const json = options.json === true;
  const after = options.after ?? 0n;
  if (operation !== undefined) {
    if (options.type || options.state || options.profile || options.label)
      throw new Error("--type, --state, --profile and --label filter a watch without OPERATION");
    return untilInterrupted((signal) => followOperation(client, operation, after, json, signal));
  }
  const types = options.type ?? [];
  const filter = {
    types: types.flatMap((t) => ("eventType" in t ? [t.eventType] : [])),
    operationTypes: types.flatMap((t) => ("operationType" in t ? [t.operationType] : [])),
    states: options.state,
    profile: options.profile,
    labels: options.label,
  };
  return untilInterrupted(async (signal) => {
    for await (const response of client.watchEvents({ filter, afterSequence: after }, { signal })) {
      if (json)
        console.log(response.kind.case === "event" ? jsonLine(OperationEventSchema, response.kind.value) : jsonLine(WatchEventsResponseSchema, response));
      else if (response.kind.case === "event") console.log(formatEvent(response.kind.value));
    }
  });
}

export function registerOperationCommands(program: Command): void {
  withSubmitOptions(program.command("submit"))
    .description("Submit an operation: one of the spec flags, or -f FILE. Exit 0 when admitted; with --wait, 0 completed, 1 failed or cancelled.")
    .addOption(serverOption())
    .option("--wait", "follow the operation's events until it ends")
    .option(
      "--follow-output",
      "with an execution or container: instead of its events, print its output as it is produced (stdout to stdout, stderr to stderr, every attempt) until it ends; implies --wait",
    )
    .option("--json", "print the response (and with --wait each event) as one line of proto JSON")
    .action(submit);

  operationArgument(program.command("get").description("Show one operation."))
    .addOption(serverOption())
    .option("--json", "print the GetOperationResponse as proto JSON")
    .action(async (name: string, options: Common) => {
      const response = await operationClient(options.server).getOperation({ name });
      console.log(options.json ? jsonLine(GetOperationResponseSchema, response) : formatOperation(response.operation!));
    });

  withFilterOptions(program.command("list"), "operation type, e.g. agent_machine.execution.start", contractName(operationTypeNames))
    .description("List operations, newest first.")
    .addOption(serverOption())
    .option("--page-size <n>", "operations per page (server default 50, at most 1000)", integerFlag(1))
    .option("--page-token <token>", "continue after a previous page")
    .option("--all", "follow next_page_token to the last page")
    .option("--json", "print one JSON array of operations")
    .action(list);

  operationArgument(program.command("cancel").description("Cancel a queued, running or retrying execution."))
    .addOption(serverOption())
    .option("--reason <text>", "why", "")
    .option("--json", "print the CancelOperationResponse as proto JSON")
    .action(async (name: string, options: Common & { reason: string }) => {
      const response = await operationClient(options.server).cancelOperation({ name, reason: options.reason });
      console.log(
        options.json
          ? jsonLine(CancelOperationResponseSchema, response)
          : `${formatOperation(response.operation!)}\n${"cancel:".padEnd(12)}${response.cancelOperation?.name ?? ""}`,
      );
    });

  withFilterOptions(program.command("watch"), "event type (start, progress, …) or operation type (agent_machine.…)", watchType)
    .description("Stream events: of one OPERATION until it ends, or of all operations matching the filters until Ctrl-C.")
    .argument("[operation]", "operations/ID (or just ID)", resourceName("operations"))
    .addOption(serverOption())
    .option("--after <sequence>", "only events after this sequence (resume where a previous watch stopped)", sequenceFlag)
    .option("--json", 'one line of proto JSON per event; bookmarks as {"bookmark": {"sequence": …}}')
    .action(watch);
}
