// A runtime call from flags, for `amctl call` (asked inside an execution) and `amctl policy
// check --call` (a dry run): its kind, the flag naming what it calls, and for a model call the
// tokens it expects to use. Flags of another kind are a usage error, before the server is asked.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { InvalidArgumentError, Option, type Command } from "commander";
import { CallKind, type RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import { integerFlag } from "./flags.js";

export interface CallFlags {
  provider?: string;
  connector?: string;
  tool?: string;
  tokens?: number;
}

type TargetFlag = "provider" | "connector" | "tool";

export interface CallKindSpelling {
  kind: CallKind;
  /** Its name on the command line. */
  name: string;
  /** The flag naming what it calls. */
  target: TargetFlag;
  help: string;
}

export const callKinds: readonly CallKindSpelling[] = [
  { kind: CallKind.MODEL, name: "model", target: "provider", help: "the model provider (bound in a provider profile with model_provider.bind)" },
  { kind: CallKind.CONNECTOR, name: "connector", target: "connector", help: "the connector, for example github" },
  { kind: CallKind.TOOL, name: "tool", target: "tool", help: "the tool (granted in the profile with tool_grant.apply)" },
];

const spellingOf = (kind: CallKind): CallKindSpelling => callKinds.find((spelling) => spelling.kind === kind)!;

/** `--call model|connector|tool`. */
export function callKindFlag(text: string): CallKind {
  const found = callKinds.find((spelling) => spelling.name === text);
  if (found === undefined) throw new InvalidArgumentError(`must be one of ${callKinds.map((spelling) => spelling.name).join(", ")}`);
  return found.kind;
}

function targetOption(spelling: CallKindSpelling): Option {
  return new Option(`--${spelling.target} <name>`, spelling.help);
}

function tokensOption(): Option {
  return new Option("--tokens <n>", "model calls: the tokens it is expected to use, prompt and completion (default 0)").argParser(integerFlag());
}

/** Adds the flags of every kind of call: for a command where the kind is itself a flag (`--call`). */
export function withCallOptions(command: Command): Command {
  for (const spelling of callKinds) command.addOption(targetOption(spelling));
  return command.addOption(tokensOption());
}

/** Adds the flags of one kind of call, for a command of its own: what it calls (required), and for a model call --tokens. */
export function withCallKindOptions(command: Command, spelling: CallKindSpelling): Command {
  command.addOption(targetOption(spelling).makeOptionMandatory());
  return spelling.kind === CallKind.MODEL ? command.addOption(tokensOption()) : command;
}

/** The call flags that were given, as spelled on the command line. */
export function callFlagsGiven(flags: CallFlags): string[] {
  return [...callKinds.map((spelling) => spelling.target), "tokens" as const].filter((key) => flags[key] !== undefined).map((key) => `--${key}`);
}

/** The call `flags` describe for `kind`. Throws an Error (a usage error) when they do not make one. */
export function runtimeCall(kind: CallKind, flags: CallFlags): MessageInitShape<typeof RuntimeCallSchema> {
  const spelling = spellingOf(kind);
  if (flags[spelling.target] === undefined) throw new Error(`a ${spelling.name} call needs --${spelling.target}`);
  const stray = callFlagsGiven(flags).filter((flag) => flag !== `--${spelling.target}` && !(flag === "--tokens" && kind === CallKind.MODEL));
  if (stray.length > 0) throw new Error(`a ${spelling.name} call takes no ${stray.join(", ")}`);
  return {
    kind,
    modelProvider: flags.provider ?? "",
    connector: flags.connector ?? "",
    tool: flags.tool ?? "",
    estimatedTokens: BigInt(flags.tokens ?? 0),
  };
}
