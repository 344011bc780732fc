// `amctl logs [-f] [--stderr] [--attempt N] [--since-offset N] operations/ID`: an execution's
// output as the server keeps it (OutputService), written to stdout byte for byte; with -f,
// followed until the attempt ends, across broken connections and server restarts
// (output-follow.ts). Whether output was truncated is said on stderr, as is where to resume.
import type { Command } from "commander";
import { OutputStream } from "../gen/agentmachine/v1/output_pb.js";
import { serverOption } from "./client.js";
import { integerFlag, offsetFlag, resourceName } from "./flags.js";
import { untilInterrupted } from "./follow.js";
import { readOutput, type OutputEnded } from "./output-follow.js";

interface LogsFlags {
  server: string;
  follow?: boolean;
  stderr?: boolean;
  attempt?: number;
  sinceOffset?: bigint;
}

const streamName = (stream: OutputStream): string => (stream === OutputStream.STDERR ? "stderr" : "stdout");

/** Tells on stderr which streams lost output to the server's limit. */
export function reportTruncation(name: string, ended: OutputEnded): void {
  for (const end of ended.ends) {
    if (end.truncated)
      console.error(
        `amctl: the ${streamName(end.stream)} of attempt ${ended.attempt} of ${name} was truncated at ${end.offset} bytes (the server's output limit)`,
      );
  }
}

/**
 * Follows an execution's output, attempt after attempt, until it ends: stdout to stdout, stderr
 * to stderr (`amctl submit --follow-output`).
 */
export async function followEveryAttempt(server: string, name: string, isOver: (attempt: number) => Promise<boolean>): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    const ended = await readOutput({
      server,
      name,
      attempt,
      streams: [],
      offsets: { stdout: 0n, stderr: 0n },
      follow: true,
      write: (stream, data) => (stream === OutputStream.STDERR ? process.stderr : process.stdout).write(data),
    });
    reportTruncation(name, ended);
    if (await isOver(attempt)) return;
  }
}

export function registerLogsCommand(program: Command): void {
  program
    .command("logs")
    .description("Print an execution's output (stdout, or stderr with --stderr) as the server keeps it; with -f, follow it until the attempt ends.")
    .argument("<operation>", "operations/ID (or just ID)", resourceName("operations"))
    .addOption(serverOption())
    .option("-f, --follow", "keep printing output as it is produced until the attempt ends (reconnecting if the connection breaks)")
    .option("--stderr", "print the standard error stream instead of standard output")
    .option("--attempt <n>", "which attempt (default: the latest)", integerFlag(1))
    .option("--since-offset <n>", "start at this byte offset of the stream (resume where an earlier read stopped)", offsetFlag)
    .action((name: string, options: LogsFlags) =>
      untilInterrupted(async (signal) => {
        const stream = options.stderr ? OutputStream.STDERR : OutputStream.STDOUT;
        const offset = options.sinceOffset ?? 0n;
        const ended = await readOutput({
          server: options.server,
          name,
          attempt: options.attempt ?? 0,
          streams: [stream],
          offsets: { stdout: offset, stderr: offset },
          follow: options.follow === true,
          write: (_stream, data) => process.stdout.write(data),
          signal,
        });
        reportTruncation(name, ended);
      }),
    );
}
