// A directory of policy bundles (`*.yaml`, one per profile type: `serve --policy DIR`, default
// DATA_DIR/policies, where `amctl init` copies the defaults) kept in force while the server runs.
// At start, and on SIGHUP as a restart would, every bundle that differs from the one in force
// is applied; when the directory changes, the bundles of the files that changed since it was
// last read (so a change to one file does not undo an `amctl policy apply` of another type).
//
// The directory is applied whole or not at all: a file that does not compile, or two files for
// one profile type, leave every bundle in force as it was — at start the server does not start,
// later the problem is logged and nothing is applied until it is fixed, when every change made
// meanwhile is applied together. A bundle whose content is already in force is not stored again,
// so reading an unchanged directory makes no new version. Removing a file leaves its bundle in
// force (the store has no "no bundle" version): replace the file, or apply another bundle.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { profileTypeNames } from "../../model/mapping.js";
import type { ProfileType } from "../../gen/agentmachine/v1/types_pb.js";
import type { Logger } from "../../api/logger.js";
import { compileBundle, type CompiledBundle } from "./policy-bundle.js";
import type { PolicyEngine } from "./policy-engine.js";

interface BundleFile {
  file: string;
  source: string;
  bundle: CompiledBundle;
}

/** Which files a read applies: every one that differs from the bundle in force, or only those changed since the last read. */
export type DirectoryScope = "all" | "changed";

/** The bundles of `dir`, compiled; throws naming the file at the first problem. A directory that does not exist holds none, unless it must. */
function readBundles(dir: string, mustExist: boolean): BundleFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT" && !mustExist) return [];
    throw error;
  }
  const files = names
    .filter((file) => /\.ya?ml$/.test(file))
    .sort()
    .map((file) => {
      const source = readFileSync(join(dir, file), "utf8");
      try {
        return { file, source, bundle: compileBundle(source) };
      } catch (error) {
        throw new Error(`policy bundle ${join(dir, file)}: ${(error as Error).message}`);
      }
    });
  const seen = new Map<ProfileType, string>();
  for (const { file, bundle } of files) {
    const other = seen.get(bundle.profileType);
    if (other !== undefined) throw new Error(`policy bundles ${other} and ${file} both govern ${profileTypeNames.get(bundle.profileType)}`);
    seen.set(bundle.profileType, file);
  }
  return files;
}

export class PolicyDirectory {
  /** Each file's digest as the directory was last read whole. */
  private lastRead = new Map<string, string>();
  /** Reads run one after another, so that two never store the same bundle twice. */
  private applying: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dir: string,
    private readonly engine: PolicyEngine,
    private readonly log: Logger,
  ) {}

  /**
   * At start: applies every bundle that differs from the one in force; throws, naming the file,
   * on a problem. `mustExist`: a directory named by --policy must be there; the default one may
   * come later (amctl init makes it).
   */
  applyAtStart(mustExist: boolean): Promise<void> {
    return this.serialized(async () => this.logApplied("start", await this.apply("all", mustExist)));
  }

  /** Reads the directory again (`trigger` says why) and applies it; logs what it applied, or why it applied nothing. Never rejects. */
  reload(trigger: string, scope: DirectoryScope): Promise<void> {
    return this.serialized(async () => {
      try {
        this.logApplied(trigger, await this.apply(scope, false));
      } catch (error) {
        this.log.error(
          { trigger, dir: this.dir, problem: (error as Error).message },
          "policy directory not applied: every bundle in force stays until it is fixed",
        );
      }
    });
  }

  private serialized<T>(read: () => Promise<T>): Promise<T> {
    const next = this.applying.then(read, read);
    this.applying = next.catch(() => undefined);
    return next;
  }

  private async apply(scope: DirectoryScope, mustExist: boolean): Promise<{ file: string; bundle: string; digest: string }[]> {
    const files = readBundles(this.dir, mustExist);
    // On a shared store another replica may have applied the same bundle: it is not stored twice.
    await this.engine.load();
    const applied = [];
    for (const { file, source, bundle } of files) {
      if (scope === "changed" && this.lastRead.get(file) === bundle.digest) continue;
      const stored = await this.engine.applyCompiled(bundle, source, `file:${join(this.dir, file)}`);
      if (stored !== undefined) applied.push({ file, bundle: stored.name, digest: stored.digest });
    }
    this.lastRead = new Map(files.map(({ file, bundle }) => [file, bundle.digest]));
    return applied;
  }

  private logApplied(trigger: string, applied: { file: string; bundle: string; digest: string }[]): void {
    if (applied.length > 0) this.log.info({ trigger, dir: this.dir, applied }, "policy directory applied");
    else this.log.debug({ trigger, dir: this.dir }, "policy directory re-read");
  }
}
