// `amctl`: the command-line client and server. Each command group lives in its own module.
import { Command, CommanderError } from "commander";
import { registerAuditCommands } from "./audit-commands.js";
import { registerCallCommands } from "./call-commands.js";
import { useTokenFile } from "./client.js";
import { registerContractCommands } from "./contract-commands.js";
import { registerDiagnosticsCommands } from "./diagnostics-commands.js";
import { registerFilesCommands } from "./files-commands.js";
import { registerGovernanceCommands } from "./governance-commands.js";
import { registerLogsCommand } from "./logs-command.js";
import { registerMcpUpstreamCommands } from "./mcp-upstream-commands.js";
import { registerOperationCommands } from "./operation-commands.js";
import { registerPolicyCommands } from "./policy-commands.js";
import { registerProfileCommands } from "./profile-commands.js";
import { registerServeCommand } from "./serve-command.js";
import { registerWorkerCommand } from "./worker-command.js";
import { EXIT_USAGE } from "./exit-codes.js";
import { reportError } from "./report-error.js";

const program = new Command("amctl")
  .description("Agent Machine Operation Plane: decides and records what AI agents may do on this machine.")
  .option("--token-file <file>", "file holding the credential sent with every call (default: AMCTL_TOKEN)")
  .showHelpAfterError()
  .exitOverride()
  .hook("preAction", () => useTokenFile(program.opts<{ tokenFile?: string }>().tokenFile));

// A reader that stops early (`amctl watch --json | head -n 1`) is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") throw error;
  process.exit(0);
});

registerServeCommand(program);
registerContractCommands(program);
registerOperationCommands(program);
registerLogsCommand(program);
registerGovernanceCommands(program);
registerPolicyCommands(program);
registerMcpUpstreamCommands(program);
registerProfileCommands(program);
registerCallCommands(program);
registerDiagnosticsCommands(program);
registerFilesCommands(program);
registerAuditCommands(program);
registerWorkerCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and version are not failures; any other parse error is a usage error.
    process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  process.exit(reportError(error));
}
