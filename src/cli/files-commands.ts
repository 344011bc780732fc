// `amctl files list | get | delete`: the files an ended execution left in its workspace
// (WorkspaceService). A download is saved through a partial file and takes its name only when
// its bytes have the SHA-256 and size the server announced before sending them.
import { basename } from "node:path";
import type { Command } from "commander";
import {
  DeleteWorkspaceResponseSchema,
  WorkspaceFileSchema,
  WorkspaceFileType,
  WorkspaceService,
  type WorkspaceFile,
} from "../gen/agentmachine/v1/workspace_service_pb.js";
import { serverOption, serviceClient } from "./client.js";
import { integerFlag, resourceName } from "./flags.js";
import { formatFields, formatTable, jsonLine } from "./format.js";
import { saveVerified } from "./verified-download.js";

interface Common {
  server: string;
  json?: boolean;
}

const typeLetters: ReadonlyMap<WorkspaceFileType, string> = new Map([
  [WorkspaceFileType.REGULAR, "file"],
  [WorkspaceFileType.DIRECTORY, "dir"],
  [WorkspaceFileType.SYMLINK, "link"],
  [WorkspaceFileType.OTHER, "other"],
]);

function row(file: WorkspaceFile): string[] {
  return [
    typeLetters.get(file.type) ?? "?",
    file.mode.toString(8).padStart(4, "0"),
    String(file.sizeBytes),
    file.sha256,
    file.type === WorkspaceFileType.SYMLINK ? `${file.path} -> ${file.linkTarget}` : file.path,
  ];
}

async function list(operation: string, path: string | undefined, options: Common & { pageSize?: number }): Promise<void> {
  const client = serviceClient(WorkspaceService, options.server);
  const rows: string[][] = [];
  let pageToken = "";
  do {
    const page = await client.listWorkspaceFiles({ operation, path: path ?? "", pageSize: options.pageSize ?? 0, pageToken });
    for (const file of page.files) {
      if (options.json) console.log(jsonLine(WorkspaceFileSchema, file));
      else rows.push(row(file));
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  if (!options.json) console.log(formatTable(["TYPE", "MODE", "SIZE", "SHA256", "PATH"], rows));
}

async function get(operation: string, path: string, options: Common & { output?: string }): Promise<void> {
  const file = options.output ?? basename(path);
  let announced: WorkspaceFile | undefined;
  const chunks = (async function* () {
    for await (const { part } of serviceClient(WorkspaceService, options.server).downloadWorkspaceFile({ operation, path })) {
      if (part.case === "file") announced = part.value;
      else if (part.case === "chunk") yield part.value;
    }
  })();
  const saved = await saveVerified(chunks, file, () => announced ?? { sha256: "(not announced)", sizeBytes: -1n }, `${path} of ${operation}`);
  if (options.json) console.log(JSON.stringify({ operation, path, file, ...saved }));
  else
    console.log(
      formatFields([
        ["operation", operation],
        ["path", path],
        ["file", file],
        ["size", `${saved.sizeBytes} bytes`],
        ["sha256", saved.sha256],
      ]),
    );
}

export function registerFilesCommands(program: Command): void {
  const files = program.command("files").description("Files an ended execution left in its workspace (kept for the server's --workspace-retention-hours)");

  files
    .command("list")
    .description(
      "List the entries of an ended execution's workspace, or of one directory of it, with each regular file's SHA-256; links are shown, never followed.",
    )
    .argument("<operation>", "operations/ID (or just ID)", resourceName("operations"))
    .argument("[path]", "a directory or file inside the workspace (default: all of it)")
    .option("--page-size <n>", "entries per call (server default 100, at most 1000)", integerFlag(1))
    .addOption(serverOption())
    .option("--json", "print each entry as one line of proto JSON")
    .action(list);

  files
    .command("get")
    .description("Download one regular file of an ended execution's workspace; saved only when its SHA-256 matches the server's.")
    .argument("<operation>", "operations/ID (or just ID)", resourceName("operations"))
    .argument("<path>", "the file, relative to the workspace")
    .option("-o, --output <file>", "where to save it (default: its name, in this directory)")
    .addOption(serverOption())
    .option("--json", "print {operation, path, file, sizeBytes, sha256} as one JSON line")
    .action(get);

  files
    .command("delete")
    .description("Remove an ended execution's workspace now rather than at the end of its retention period.")
    .argument("<operation>", "operations/ID (or just ID)", resourceName("operations"))
    .addOption(serverOption())
    .option("--json", "print the response as one line of proto JSON")
    .action(async (operation: string, options: Common) => {
      const response = await serviceClient(WorkspaceService, options.server).deleteWorkspace({ operation });
      if (options.json) console.log(jsonLine(DeleteWorkspaceResponseSchema, response));
      else console.log(response.removed ? `removed the workspace of ${operation} (${response.freedBytes} bytes)` : `${operation} had no workspace left`);
    });
}
