// `amctl contract validate` (local, no server needed) and `amctl contract show` (asks a server).
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { ContractService } from "../gen/agentmachine/v1/contract_service_pb.js";
import { validateContractText, type ContractViolation } from "../contract/validate.js";
import { serverOption, serviceClient } from "./client.js";
import { EXIT_INVALID, EXIT_OK, EXIT_USAGE } from "./exit-codes.js";

interface FileReport {
  file: string;
  valid: boolean;
  violations: ContractViolation[];
  /** Set when the file could not be read; then `valid` is false and there are no violations. */
  error?: string;
}

async function checkFile(file: string): Promise<FileReport> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    return { file, valid: false, violations: [], error: `cannot read ${file}: ${code}` };
  }
  return { file, ...validateContractText(text) };
}

function printHuman(reports: FileReport[]): void {
  for (const report of reports) {
    if (report.error !== undefined) {
      console.error(`${report.file}: ${report.error}`);
      continue;
    }
    console.log(`${report.file}: ${report.valid ? "valid" : "invalid"}`);
    for (const v of report.violations) console.log(`  ${v.path || "(document)"}: ${v.message}`);
  }
}

export function registerContractCommands(program: Command): void {
  const contract = program.command("contract").description("WorkspaceOperationContract documents");

  contract
    .command("validate")
    .description("Check contract documents against the upstream JSON schema. Exit 0 all valid, 1 any invalid, 2 a file could not be read.")
    .argument("<files...>", "contract documents (JSON)")
    .option("--json", "print one JSON array of {file, valid, violations}")
    .action(async (files: string[], options: { json?: boolean }) => {
      const reports = await Promise.all(files.map(checkFile));
      if (options.json) console.log(JSON.stringify(reports, null, 2));
      else printHuman(reports);
      process.exitCode = reports.some((r) => r.error !== undefined) ? EXIT_USAGE : reports.every((r) => r.valid) ? EXIT_OK : EXIT_INVALID;
    });

  contract
    .command("show")
    .description("Print the server's own contract document.")
    .addOption(serverOption())
    .action(async (options: { server: string }) => {
      try {
        const { json } = await serviceClient(ContractService, options.server).getContract({});
        console.log(json);
      } catch (error) {
        console.error(`amctl: cannot get the contract from ${options.server}: ${(error as Error).message}`);
        process.exitCode = EXIT_USAGE;
      }
    });
}
