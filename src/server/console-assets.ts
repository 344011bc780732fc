// The web console's files (src/console/). Its script is bundled by esbuild when it is first
// asked for, in memory, and kept for the life of the server: like the rest of amctl (run
// through tsx) there is no build step, so nothing built can go stale against the sources or
// be missing from a checkout. esbuild comes with tsx; a bundle takes about a tenth of a second.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const consoleDir = fileURLToPath(new URL("../console/", import.meta.url));

export interface ConsoleAsset {
  contentType: string;
  body: Buffer;
}

async function bundle(): Promise<Buffer> {
  const result = await build({
    entryPoints: [`${consoleDir}main.ts`],
    bundle: true,
    write: false,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    legalComments: "none",
    logLevel: "silent",
  });
  return Buffer.from(result.outputFiles[0]!.contents);
}

const sources: Record<string, { contentType: string; load: () => Promise<Buffer> }> = {
  "index.html": { contentType: "text/html; charset=utf-8", load: () => readFile(`${consoleDir}index.html`) },
  "console.css": { contentType: "text/css; charset=utf-8", load: () => readFile(`${consoleDir}console.css`) },
  "console.js": { contentType: "text/javascript; charset=utf-8", load: bundle },
};

/** The console's files by name, each loaded (or bundled) once, on first use. */
export class ConsoleAssets {
  private readonly loaded = new Map<string, Promise<ConsoleAsset>>();

  /** The file `name` (e.g. `console.js`), or undefined if the console has no such file. */
  get(name: string): Promise<ConsoleAsset> | undefined {
    const source = Object.hasOwn(sources, name) ? sources[name] : undefined;
    if (source === undefined) return undefined;
    let asset = this.loaded.get(name);
    if (asset === undefined) {
      asset = source.load().then((body) => ({ contentType: source.contentType, body }));
      // A failed build is tried again on the next request rather than remembered.
      asset.catch(() => this.loaded.delete(name));
      this.loaded.set(name, asset);
    }
    return asset;
  }
}
