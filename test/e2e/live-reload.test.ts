// A running `amctl serve` picks up its trust anchors and its policy directory as they change,
// without a restart: through a watch on them, a re-read when a credential names an unknown key
// id (at most one a second, however many forged ids arrive), and SIGHUP (as a restart would).
// Every server here is a child process on a real socket; what it did is read from its log.
import { generateKeyPairSync } from "node:crypto";
import { copyFileSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { EvaluatePolicyRequestSchema } from "../../src/gen/agentmachine/v1/policy_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { importSigningKey, type SigningKey } from "../../src/governance/credentials.js";
import { operatorKeyFiles } from "../../src/governance/operator-key.js";
import { bearer, mintRoot } from "../helpers/auth.js";
import { createProfile, operationsClient, requestId } from "../helpers/operations.js";
import { bundleSource, policyAdmin, policyClient, sha256 } from "../helpers/policy.js";
import { repoRoot, startChildServer, tempDir, type ChildServer } from "../helpers/server.js";

const EXAMPLES = join(repoRoot, "examples/policies");

const servers: ChildServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.child.kill("SIGTERM");
    await server.exited;
  }
});

async function serve(args: string[]): Promise<ChildServer> {
  const server = await startChildServer(["--log-level", "debug", ...args]);
  servers.push(server);
  return server;
}

/** The server's log lines, parsed. */
function logOf(server: ChildServer): Record<string, unknown>[] {
  return server
    .stderr()
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A new operator key pair: its public key as PEM, and the key to sign roots with. */
async function operatorKey(): Promise<{ publicPem: string; signing: SigningKey }> {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  return { publicPem, signing: await importSigningKey(privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicPem, "operator") };
}

/** Writes `file` as editors and `mv` do: a temporary file beside it, renamed over it. */
function replaceFile(file: string, content: string): void {
  const temporary = join(dirname(file), `.${Date.now()}.tmp`);
  writeFileSync(temporary, content);
  renameSync(temporary, file);
}

type WhoAmIClient = ReturnType<typeof whoamiClient>;
const whoamiClient = (server: ChildServer, token: string) =>
  createClient(DelegationService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));

/** What WhoAmI answers `token` (or a client sending one): "ok", or the error's code. */
async function whoami(server: ChildServer, token: string | WhoAmIClient): Promise<"ok" | Code> {
  const client = typeof token === "string" ? whoamiClient(server, token) : token;
  try {
    await client.whoAmI({});
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

/** A copy of the example bundles in a directory of its own. */
function policyDirectory(): string {
  const dir = tempDir("amctl-policies-");
  for (const file of readdirSync(EXAMPLES).filter((name) => name.endsWith(".yaml"))) copyFileSync(join(EXAMPLES, file), join(dir, file));
  return dir;
}

/** The example personal bundle with `tool` added to the tools it allows. */
const personalWith = (tool: string): string => readFileSync(join(EXAMPLES, "personal.yaml"), "utf8").replace('"browser"]', `"browser", "${tool}"]`);

/** Whether the gates would allow granting `tool` in `profile`, asked with `token`. */
async function grantAllowed(server: ChildServer, profile: string, tool: string, token = server.token): Promise<boolean> {
  const request = create(EvaluatePolicyRequestSchema, {
    subject: { case: "operation", value: { requestId: requestId("check"), profile, spec: { kind: { case: "toolGrantApply", value: { tool } } } } },
  });
  return (await policyClient(server.url, token).evaluatePolicy(request)).allowed;
}

/** The bundles in force, as `NAME DIGEST` (the name ends in the version). */
async function bundlesInForce(server: ChildServer): Promise<string[]> {
  const { bundles } = await policyClient(server.url).listPolicyBundles({});
  return bundles.map((bundle) => `${bundle.name} ${bundle.digest}`);
}

describe("trust anchors", () => {
  it("a rotated operator key (operator.pub replaced) is trusted, and the old one no longer, without a restart", async () => {
    const server = await serve([]);
    expect(await whoami(server, server.token)).toBe("ok");
    const rotated = await operatorKey();
    const fresh = await mintRoot(rotated.signing);
    replaceFile(operatorKeyFiles(server.dataDir).publicKey, rotated.publicPem);

    await expect.poll(() => whoami(server, fresh), { timeout: 5000 }).toBe("ok");
    expect(await whoami(server, server.token)).toBe(Code.Unauthenticated);
    const change = logOf(server).find((line) => line.msg === "trust anchors changed");
    expect(change).toMatchObject({ added: [{ keyId: rotated.signing.keyId }], removed: [{ file: operatorKeyFiles(server.dataDir).publicKey }] });
    // Key ids and files, never the keys.
    expect(server.stderr()).not.toContain(rotated.publicPem.split("\n")[1]!);
  });

  it("an unknown key id is Unauthenticated saying that no restart is needed; a flood of them re-reads the anchors at most once a second", async () => {
    const server = await serve([]);
    // One connection per credential, each reused, as a client flooding the server would.
    const forged = await Promise.all(Array.from({ length: 20 }, async () => whoamiClient(server, await mintRoot((await operatorKey()).signing))));
    const refusal = await forged[0]!.whoAmI({}).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(refusal?.code).toBe(Code.Unauthenticated);
    expect(refusal?.rawMessage).toMatch(/^the credential is signed by an unknown key: .*re-reads them as they change \(no restart needed\).*amctl init/);

    let sent = 1;
    const started = performance.now();
    // A flood: more than 200 refusals, over at least 2.5 s (however slow the machine is).
    while (sent <= 200 || performance.now() - started < 2500) {
      const outcomes = await Promise.all(forged.map((client) => whoami(server, client)));
      expect(outcomes.every((outcome) => outcome === Code.Unauthenticated)).toBe(true);
      sent += forged.length;
    }
    const elapsedMs = performance.now() - started;
    expect(await whoami(server, server.token)).toBe("ok");
    const rereads = logOf(server).filter((line) => line.trigger === "unknown key id");
    expect(rereads.length).toBeGreaterThanOrEqual(1);
    // One at the first forged id, then at most one a second (the first refusal came before `started`).
    expect(rereads.length).toBeLessThanOrEqual(Math.floor(elapsedMs / 1000) + 2);
  });
});

describe("policy directory", () => {
  it("a broken bundle file keeps the bundles in force (and a valid change made with it) and says why; once fixed, the changes apply, and an unchanged file makes no new version", async () => {
    const dir = policyDirectory();
    const server = await serve(["--policy", dir]);
    const dev = await createProfile(operationsClient(server.url), "dev", ProfileType.PERSONAL);
    expect(await grantAllowed(server, dev, "git")).toBe(true);
    const before = await bundlesInForce(server);

    replaceFile(join(dir, "personal.yaml"), "profileType: personal\nrules:\n  - id: broken\n    gate: toolGrant\n    effect: allow\n    when: input.tool ==\n");
    // Changed after the broken file, so no read of the directory sees it without the broken one.
    replaceFile(
      join(dir, "corporate_firewall.yaml"),
      bundleSource("corporate_firewall", [{ id: "corp.git", gate: "toolGrant", effect: "allow", when: 'input.tool == "git"' }]),
    );
    await expect
      .poll(() => logOf(server).find((line) => String(line.msg).startsWith("policy directory not applied")), { timeout: 5000 })
      .toMatchObject({
        level: "error",
        problem: expect.stringMatching(/personal\.yaml: rules\[0\]\.when/),
      });
    expect(await bundlesInForce(server)).toEqual(before);
    expect(await grantAllowed(server, dev, "git")).toBe(true);

    replaceFile(join(dir, "personal.yaml"), personalWith("nmap"));
    await expect.poll(() => grantAllowed(server, dev, "nmap"), { timeout: 5000 }).toBe(true);
    const after = await bundlesInForce(server);
    expect(after.filter((bundle) => !before.includes(bundle)).map((bundle) => bundle.split(" ")[0])).toEqual([
      "policyBundles/personal/versions/2",
      "policyBundles/corporate_firewall/versions/2",
    ]);

    // Saved again without a change: read, and nothing new is stored.
    const reads = logOf(server).filter((line) => line.msg === "policy directory re-read").length;
    replaceFile(join(dir, "personal.yaml"), personalWith("nmap"));
    await expect.poll(() => logOf(server).filter((line) => line.msg === "policy directory re-read").length, { timeout: 5000 }).toBeGreaterThan(reads);
    expect(await bundlesInForce(server)).toEqual(after);
  });
});

describe("SIGHUP", () => {
  it("re-reads the trust anchors and the policy directory as a restart would, and the server keeps serving", async () => {
    // A --trust-anchor that is a link to a key kept elsewhere: rewriting the key changes nothing
    // in the directory the link is in, so only a re-read finds it.
    const keys = tempDir("amctl-keys-");
    const links = tempDir("amctl-anchors-");
    const first = await operatorKey();
    writeFileSync(join(keys, "current.pub"), first.publicPem);
    symlinkSync(join(keys, "current.pub"), join(links, "operator.pub"));
    const dir = policyDirectory();
    const server = await serve(["--trust-anchor", join(links, "operator.pub"), "--policy", dir]);
    const firstRoot = await mintRoot(first.signing);
    expect(await whoami(server, firstRoot)).toBe("ok");

    // A bundle applied through the API replaces the directory's until the directory is applied again.
    const admin = await policyAdmin(server.dataDir, [ProfileType.PERSONAL]);
    const dev = await createProfile(operationsClient(server.url), "dev", ProfileType.PERSONAL);
    await policyClient(server.url, admin).applyPolicyBundle({ profileType: ProfileType.PERSONAL, source: personalWith("nmap") });
    expect(await grantAllowed(server, dev, "nmap")).toBe(true);

    const second = await operatorKey();
    writeFileSync(join(keys, "current.pub"), second.publicPem);
    const reloads = (trigger: string) => logOf(server).filter((line) => line.trigger === trigger);
    server.child.kill("SIGHUP");
    await expect
      .poll(() => reloads("SIGHUP").map((line) => line.msg), { timeout: 5000 })
      .toEqual(expect.arrayContaining(["trust anchors changed", "policy directory applied"]));

    expect(await whoami(server, await mintRoot(second.signing))).toBe("ok");
    expect(await whoami(server, firstRoot)).toBe(Code.Unauthenticated);
    expect(await grantAllowed(server, dev, "nmap")).toBe(false);
    const applied = await bundlesInForce(server);
    expect(applied).toContain(`policyBundles/personal/versions/3 ${sha256(readFileSync(join(dir, "personal.yaml"), "utf8"))}`);

    // Nothing changed since: a second SIGHUP stores no new version.
    server.child.kill("SIGHUP");
    await expect.poll(() => reloads("SIGHUP").filter((line) => line.msg === "policy directory re-read").length, { timeout: 5000 }).toBeGreaterThan(0);
    expect(await bundlesInForce(server)).toEqual(applied);
    expect(server.child.exitCode).toBeNull();
  });
});
