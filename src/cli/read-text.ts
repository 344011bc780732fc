// Reading a file a command names. One that cannot be read is a usage error naming the file and
// why (ENOENT, EACCES, …), not a stack trace.
import { readFile } from "node:fs/promises";

export async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}
