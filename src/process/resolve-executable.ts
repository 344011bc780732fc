// Finds the container runtime once, when the server starts: a misspelt or missing runtime stops
// the start with a message, rather than failing every container run later, and a later change
// of PATH cannot swap the binary the server runs.
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join, resolve } from "node:path";

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The absolute path of `command`: itself if it names a path, else the first match on `searchPath`. */
export function resolveExecutable(command: string, searchPath = process.env.PATH ?? ""): string {
  if (command.includes("/")) {
    const path = resolve(command);
    if (!isExecutableFile(path)) throw new Error(`${path} is not an executable file`);
    return path;
  }
  // Relative entries of PATH would make the answer depend on the working directory: skipped.
  const found = searchPath
    .split(delimiter)
    .filter((dir) => isAbsolute(dir))
    .map((dir) => join(dir, command))
    .find(isExecutableFile);
  if (found === undefined) throw new Error(`${command} was not found on PATH`);
  return found;
}
