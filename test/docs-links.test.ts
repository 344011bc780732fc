// The prose points only at things that exist: every relative Markdown link in README.md, docs/,
// examples/ and bench/README.md resolves to a file or directory of the repository (and an
// `#anchor` into a Markdown file to one of its headings), and every repository path quoted as
// code (`src/model/mapping.ts`, or a bare `launcher.ts`) names one too — modules move, and the docs must move with them.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./helpers/temp-dir.js";

const documents = (): string[] => {
  const found = ["README.md", "bench/README.md"];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".md")) found.push(path);
    }
  };
  walk("docs");
  walk("examples");
  return found;
};

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/`/g, "")
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");

const anchorsIn = (file: string): Set<string> => {
  const text = readFileSync(file, "utf8").replace(/```[\s\S]*?```/g, "");
  return new Set([...text.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => anchorOf(m[1] ?? "")));
};

/** Markdown links `[text](target)` outside fenced code, skipping URLs with a scheme. */
const linksIn = (text: string): string[] =>
  [...text.replace(/```[\s\S]*?```/g, "").matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => m[1] ?? "")
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target));

const pathRoots = ["src/", "test/", "scripts/", "bench/", "examples/", "docs/", "proto/", "proto-vendor/"];

/** Code spans that are a path into the repository (no placeholders, globs or arguments). */
const quotedPathsIn = (text: string): string[] =>
  [...text.replace(/```[\s\S]*?```/g, "").matchAll(/`([^`\s]+)`/g)]
    .map((m) => (m[1] ?? "").replace(/:\d+(-\d+)?$/, ""))
    .filter((path) => pathRoots.some((root) => path.startsWith(root)))
    .filter((path) => !/[{}*<>$]|\.\.\.|…/.test(path));

/** Every file name under the directories a doc may name a module of, e.g. `operation-runner.ts`. */
const repositoryFileNames = (() => {
  let names: Set<string> | undefined;
  return (): Set<string> => {
    if (names !== undefined) return names;
    const found = new Set<string>();
    const walk = (dir: string): void => {
      for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true })) {
        if (entry.isDirectory()) walk(join(dir, entry.name));
        else found.add(entry.name);
      }
    };
    for (const root of ["src", "test", "bench", "scripts", "examples", "proto", "proto-vendor", "bin"]) walk(root);
    for (const entry of readdirSync(repoRoot, { withFileTypes: true })) if (entry.isFile()) found.add(entry.name);
    names = found;
    return found;
  };
})();

/** Code spans that are a bare module or script name (`launcher.ts`), with no directory. */
const quotedFileNamesIn = (text: string): string[] =>
  [...text.replace(/```[\s\S]*?```/g, "").matchAll(/`([\w.-]+\.(?:ts|proto|sh|cjs|mjs))`/g)].map((m) => m[1] ?? "");

const problemsIn = (doc: string): string[] => {
  const file = join(repoRoot, doc);
  const text = readFileSync(file, "utf8");
  const problems: string[] = [];
  for (const link of linksIn(text)) {
    const [target = "", anchor] = link.split("#");
    const resolved = target === "" ? file : resolve(dirname(file), decodeURIComponent(target));
    if (!existsSync(resolved)) {
      problems.push(`${doc}: link ${link} → ${relative(repoRoot, resolved)} does not exist`);
      continue;
    }
    if (anchor && resolved.endsWith(".md") && !anchorsIn(resolved).has(anchor))
      problems.push(`${doc}: link ${link} → no heading #${anchor} in ${relative(repoRoot, resolved)}`);
  }
  for (const path of quotedPathsIn(text)) {
    if (!existsSync(join(repoRoot, path))) problems.push(`${doc}: \`${path}\` does not exist`);
  }
  for (const name of quotedFileNamesIn(text)) {
    if (!repositoryFileNames().has(name)) problems.push(`${doc}: \`${name}\` is no file of the repository`);
  }
  return problems;
};

describe("links and paths in the docs", () => {
  it("finds the documents it checks", () => {
    const docs = documents();
    expect(docs).toContain("docs/architecture.md");
    expect(docs).toContain("examples/policies/README.md");
    for (const doc of docs) expect(statSync(join(repoRoot, doc)).isFile()).toBe(true);
  });

  it.each(documents())("every relative link and quoted repository path in %s exists", (doc) => {
    expect(problemsIn(doc)).toEqual([]);
  });

  it("the README opens with the two commands: run the server on the embedded store, run the whole test suite", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const first = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? "";
    const commands = first
      .split("\n")
      .map((line) => line.replace(/#.*$/, "").trim())
      .filter(Boolean);
    expect(commands).toEqual(["npm ci && npm start", "npm ci && npm test"]);
    expect(readme.indexOf(first)).toBeLessThan(readme.indexOf("\n## "));
    const scripts = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
    expect(scripts.start).toMatch(/amctl\.mjs serve$/);
    expect(scripts.test).toContain("scripts/check.sh");
    expect(readFileSync(join(repoRoot, ".ci/run"), "utf8")).toContain("\nnpm ci && npm test\n");
  });

  it("the README's table of services names every service and RPC of proto/agentmachine/v1", () => {
    const table = readFileSync(join(repoRoot, "README.md"), "utf8")
      .split("\n")
      .filter((line) => line.startsWith("| `agentmachine.v1."));
    const protoDir = join(repoRoot, "proto/agentmachine/v1");
    const missing: string[] = [];
    for (const file of readdirSync(protoDir).filter((name) => name.endsWith("_service.proto"))) {
      const proto = readFileSync(join(protoDir, file), "utf8");
      const service = /^service (\w+)/m.exec(proto)?.[1] ?? "";
      const row = table.find((line) => line.startsWith(`| \`agentmachine.v1.${service}\` |`));
      if (row === undefined) missing.push(service);
      for (const [, rpc] of proto.matchAll(/^\s*rpc (\w+)\(/gm)) if (row !== undefined && !row.includes(`\`${rpc}\``)) missing.push(`${service}.${rpc}`);
    }
    expect(missing).toEqual([]);
  });

  it("a broken link, a missing anchor and a moved src/ path are each reported", () => {
    const probe = "test/fixtures/docs-links-probe.md";
    expect(existsSync(join(repoRoot, probe))).toBe(true);
    const problems = problemsIn(probe);
    expect(problems).toEqual([
      expect.stringContaining("link ../../src/server/errors.ts"),
      expect.stringContaining("no heading #nowhere"),
      expect.stringContaining("`src/server/errors.ts` does not exist"),
      expect.stringContaining("`operation-runner-old.ts` is no file"),
    ]);
  });
});
