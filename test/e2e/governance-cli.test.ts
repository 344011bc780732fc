// The operator's path through the CLI: init, a root signed offline, a server that trusts it,
// a narrower child for an agent, revocation — examples/delegations.sh, run for real. And where
// init puts the operator's private key: never in the data dir (which the server and its
// executions live in), but at --key-out FILE or the per-user place, where `delegation root`
// finds it; a data dir an older init left a private key in is warned about and can be cleared.
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { importPublicKey, verifyCredential } from "../../src/governance/credentials.js";
import { defaultPrivateKeyFile, operatorKeyFiles } from "../../src/governance/operator-key.js";
import { amctl, runExampleAgainst, type CliResult } from "../helpers/cli.js";
import { repoRoot, startChildServer, tempDir, TEST_POLICIES } from "../helpers/server.js";

/** The environment of a user whose home and XDG config dir are fresh temporary directories. */
function freshUser(config: "xdg" | "home" = "xdg"): NodeJS.ProcessEnv {
  const home = tempDir("amctl-home-");
  return { HOME: home, XDG_CONFIG_HOME: config === "xdg" ? tempDir("amctl-xdg-") : undefined, AMCTL_CONFIG_DIR: undefined };
}

function expectExit(result: CliResult, code: number): void {
  expect(result.code, `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toBe(code);
}

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

/** The data dir's operator directory holds only the public key, and no file under the data dir holds the private key in `privateKeyFile`. */
function expectOperatorKeyNotIn(dataDir: string, privateKeyFile: string): void {
  expect(readdirSync(join(dataDir, "operator"))).toEqual(["operator.pub"]);
  const pem = readFileSync(privateKeyFile, "utf8");
  expect(pem).toContain("-----BEGIN PRIVATE KEY-----");
  const base64 = pem
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("-----"))
    .join("");
  const holding = filesUnder(dataDir).filter((file) => readFileSync(file, "latin1").includes(base64));
  expect(holding.map((file) => relative(dataDir, file))).toEqual([]);
}

/** A root credential printed by `amctl delegation root` is valid under the data dir's public key. */
async function expectRootOf(dataDir: string, result: CliResult): Promise<void> {
  expectExit(result, 0);
  const anchor = await importPublicKey(readFileSync(operatorKeyFiles(dataDir).publicKey, "utf8"), "operator");
  expect((await verifyCredential(result.stdout.trim(), [anchor])).subject).toBe("operator");
}

const mode = (path: string): number => statSync(path).mode & 0o777;

describe("amctl init: the operator's private key outside the data dir", () => {
  it("without --key-out: mode 0600 in $XDG_CONFIG_HOME/amctl/operator-keys (dirs 0700), nothing of it in the data dir; delegation root finds it without --key", async () => {
    const env = freshUser("xdg");
    const dataDir = tempDir("amctl-init-");
    const init = await amctl(["init", "--data-dir", dataDir], env);
    expectExit(init, 0);
    const privateKey = defaultPrivateKeyFile(dataDir, env);
    expect(privateKey).toMatch(new RegExp(`^${env.XDG_CONFIG_HOME}/amctl/operator-keys/[0-9a-f]{16}\\.key$`));
    expect(init.stdout).toContain(`operator private key: ${privateKey}  (mode 0600, outside the data dir; \`amctl delegation root\` finds it there`);
    expect(init.stdout).toContain(`operator public key:  ${operatorKeyFiles(dataDir).publicKey}  (the server's trust anchor)`);
    expect(mode(privateKey)).toBe(0o600);
    expect(mode(join(env.XDG_CONFIG_HOME!, "amctl"))).toBe(0o700);
    expect(mode(join(env.XDG_CONFIG_HOME!, "amctl/operator-keys"))).toBe(0o700);
    expectOperatorKeyNotIn(dataDir, privateKey);
    await expectRootOf(dataDir, await amctl(["delegation", "root", "--data-dir", dataDir], env));
    // The same data dir by another spelling of its path is the same key.
    await expectRootOf(dataDir, await amctl(["delegation", "root", "--data-dir", relative(repoRoot, dataDir)], env));
  });

  it("without $XDG_CONFIG_HOME: ~/.config/amctl/operator-keys", async () => {
    const env = freshUser("home");
    const dataDir = tempDir("amctl-init-");
    expectExit(await amctl(["init", "--data-dir", dataDir], env), 0);
    const privateKey = defaultPrivateKeyFile(dataDir, env);
    expect(privateKey.startsWith(join(env.HOME!, ".config/amctl/operator-keys/"))).toBe(true);
    expect(mode(privateKey)).toBe(0o600);
    expectOperatorKeyNotIn(dataDir, privateKey);
    await expectRootOf(dataDir, await amctl(["delegation", "root", "--data-dir", dataDir], env));
  });

  it("--key-out FILE: written there (mode 0600, new dirs 0700); delegation root then needs --key, and says where it looked without it", async () => {
    const env = freshUser();
    const dataDir = tempDir("amctl-init-");
    const keyOut = join(tempDir("amctl-keys-"), "offline/operator.key");
    const init = await amctl(["init", "--data-dir", dataDir, "--key-out", keyOut], env);
    expectExit(init, 0);
    expect(init.stdout).toContain(`operator private key: ${keyOut}  (mode 0600, outside the data dir; pass it to \`amctl delegation root --key\``);
    expect(mode(keyOut)).toBe(0o600);
    expect(mode(join(keyOut, ".."))).toBe(0o700);
    expectOperatorKeyNotIn(dataDir, keyOut);
    expect(() => statSync(defaultPrivateKeyFile(dataDir, env))).toThrow(/ENOENT/);

    const lost = await amctl(["delegation", "root", "--data-dir", dataDir], env);
    expectExit(lost, 2);
    expect(lost.stderr).toContain(`no operator private key for the data dir ${dataDir}: looked in ${defaultPrivateKeyFile(dataDir, env)}`);
    expect(lost.stderr).toContain("Pass --key FILE");
    await expectRootOf(dataDir, await amctl(["delegation", "root", "--key", keyOut], env));
  });

  it("refuses a private key inside the data dir (--key-out, through a symlink, or a per-user place there) and writes nothing", async () => {
    const dataDir = tempDir("amctl-init-");
    const link = join(tempDir("amctl-link-"), "to-data");
    symlinkSync(dataDir, link);
    const attempts: [string[], NodeJS.ProcessEnv][] = [
      [["--key-out", join(dataDir, "secret/operator.key")], freshUser()],
      [["--key-out", join(link, "operator.key")], freshUser()],
      [[], { ...freshUser(), XDG_CONFIG_HOME: join(dataDir, "config") }],
    ];
    for (const [flags, env] of attempts) {
      const result = await amctl(["init", "--data-dir", dataDir, ...flags], env);
      expectExit(result, 2);
      expect(result.stderr).toMatch(/refusing to put the operator private key at .*: it lies inside the data dir .*, in reach of every execution/);
      expect(result.stderr).toContain("--key-out FILE");
    }
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it("never overwrites a key: a second init keeps the first, and --key-out onto an existing file is refused", async () => {
    const env = freshUser();
    const dataDir = tempDir("amctl-init-");
    expectExit(await amctl(["init", "--data-dir", dataDir], env), 0);
    const privateKey = defaultPrivateKeyFile(dataDir, env);
    const before = [readFileSync(privateKey, "utf8"), readFileSync(operatorKeyFiles(dataDir).publicKey, "utf8")];
    const again = await amctl(["init", "--data-dir", dataDir], env);
    expectExit(again, 2);
    expect(again.stderr).toContain("refusing to replace it");
    const elsewhere = await amctl(["init", "--data-dir", dataDir, "--key-out", join(tempDir("amctl-keys-"), "operator.key")], env);
    expectExit(elsewhere, 2);
    expect(elsewhere.stderr).toContain("refusing to replace it");
    expect([readFileSync(privateKey, "utf8"), readFileSync(operatorKeyFiles(dataDir).publicKey, "utf8")]).toEqual(before);

    const occupied = join(tempDir("amctl-keys-"), "taken.key");
    writeFileSync(occupied, "someone else's\n", { mode: 0o600 });
    const otherDataDir = tempDir("amctl-init-");
    const refused = await amctl(["init", "--data-dir", otherDataDir, "--key-out", occupied], env);
    expectExit(refused, 2);
    expect(refused.stderr).toContain(`an operator private key already exists at ${occupied}; refusing to overwrite it`);
    expect(readFileSync(occupied, "utf8")).toBe("someone else's\n");
    expect(() => statSync(operatorKeyFiles(otherDataDir).publicKey)).toThrow(/ENOENT/);
  });
});

/** Runs `amctl serve` on `dataDir` until it serves, stops it, and returns what it logged. */
async function serveLog(dataDir: string): Promise<string> {
  const child = spawn(
    process.execPath,
    [join(repoRoot, "bin/amctl.mjs"), "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--policy", TEST_POLICIES],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
      if (stderr.includes('"msg":"serving"')) resolve();
    });
    child.on("exit", () => reject(new Error(`the server exited before serving:\n${stderr}`)));
  });
  child.kill("SIGTERM");
  await exited;
  return stderr;
}

it("a data dir whose private key an older init left inside: the server warns at start, delegation root says how to move it, init --move-key moves it out", async () => {
  const env = freshUser();
  const dataDir = tempDir("amctl-legacy-");
  // What amctl init wrote before: both halves in DATA_DIR/operator.
  const legacy = operatorKeyFiles(dataDir);
  const pair = generateKeyPairSync("ed25519");
  mkdirSync(join(dataDir, "operator"), { mode: 0o700 });
  const pem = pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  writeFileSync(legacy.legacyPrivateKey, pem, { mode: 0o600 });
  writeFileSync(legacy.publicKey, pair.publicKey.export({ type: "spki", format: "pem" }));

  const warning = `the operator private key is in the data dir (${legacy.legacyPrivateKey}), in reach of executions`;
  expect(await serveLog(dataDir)).toContain(warning);
  const lost = await amctl(["delegation", "root", "--data-dir", dataDir], env);
  expectExit(lost, 2);
  expect(lost.stderr).toContain(`The data dir still holds one from an older amctl init (${legacy.legacyPrivateKey})`);
  expect(lost.stderr).toContain(`amctl init --move-key --data-dir ${dataDir}`);
  await expectRootOf(dataDir, await amctl(["delegation", "root", "--key", legacy.legacyPrivateKey], env));
  const init = await amctl(["init", "--data-dir", dataDir], env);
  expectExit(init, 2);
  expect(init.stderr).toContain("Its private key is still in the data dir: move it out with `amctl init --move-key");

  const move = await amctl(["init", "--move-key", "--data-dir", dataDir], env);
  expectExit(move, 0);
  const moved = defaultPrivateKeyFile(dataDir, env);
  expect(move.stdout).toContain(`operator private key: ${moved}  (moved from ${legacy.legacyPrivateKey}; mode 0600`);
  expect(readFileSync(moved, "utf8")).toBe(pem);
  expect(mode(moved)).toBe(0o600);
  expectOperatorKeyNotIn(dataDir, moved);
  await expectRootOf(dataDir, await amctl(["delegation", "root", "--data-dir", dataDir], env));
  const twice = await amctl(["init", "--move-key", "--data-dir", dataDir], env);
  expectExit(twice, 2);
  expect(twice.stderr).toContain("there is no operator private key in the data dir to move");
  expect(await serveLog(dataDir)).not.toContain("the operator private key is in the data dir");
}, 120_000);

it("examples/delegations.sh: init → root → child for an agent → the agent acts within its scope → revoke", async () => {
  const stdout = await runExampleAgainst("delegations.sh", await startChildServer());
  expect(stdout).toContain("agent-7");
  expect(stdout).toContain("revoked (1 delegation)");
  expect(stdout).toContain("# done");
}, 120_000);
