// `amctl`: the command-line client and server. Each command group lives in its own module.
import { Command, CommanderError } from "commander";
import { registerContractCommands } from "./contract-commands.js";
import { registerServeCommand } from "./serve-command.js";
import { EXIT_USAGE } from "./exit-codes.js";

const program = new Command("amctl")
  .description("Agent Machine Operation Plane: decides and records what AI agents may do on this machine.")
  .showHelpAfterError()
  .exitOverride();

registerServeCommand(program);
registerContractCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and version are not failures; any other parse error is a usage error.
    process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  console.error(`amctl: ${(error as Error).message}`);
  process.exit(EXIT_USAGE);
}
