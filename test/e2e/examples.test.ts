// The examples in examples/ and the README's CLI lines actually work.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateContractDocument } from "../../src/contract/validate.js";
import { repoRoot, startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
/** The environment of the examples and amctl: AMCTL_TOKEN holds the server's credential. */
const withToken = (): NodeJS.ProcessEnv => ({ ...process.env, AMCTL_TOKEN: server.token });
const amctl = (...args: string[]) =>
  run(process.execPath, [join(repoRoot, "bin/amctl.mjs"), ...args], { cwd: repoRoot, env: withToken() }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => error,
  );

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

describe("examples/calls.sh", () => {
  it("runs every curl and buf curl call against a real server", async () => {
    const { stdout } = await run("bash", [join(repoRoot, "examples/calls.sh"), server.url], { cwd: "/tmp", env: withToken() });
    expect(stdout).toContain('{"status":"SERVING"}');
    expect(stdout).toContain('{"valid":true,"violations":[]}');
    expect(stdout).toContain('"path":"/controls/ambientAuthority"');
    expect(stdout).toMatch(/"code":"invalid_argument".*document/);
    expect(stdout).toContain("agentmachine.v1.ContractService/ValidateContract");
    expect(stdout).toContain("urn:srcos:agent-machine:workspace-operation-contract:agent-machine-operation-plane");
    expect(stdout).toContain('"status": "SERVING"');
  });
});

describe("amctl contract", () => {
  const broken = [
    "ambient-authority",
    "missing-audit",
    "misspelled-profile",
    "extra-property",
    "diagnostics-include-tokens",
    "binding-to-personal-profile",
    "not-json",
  ];
  const expectedPaths: Record<string, string> = {
    "ambient-authority": "/controls/ambientAuthority",
    "missing-audit": "/audit",
    "misspelled-profile": "/artifacts/agentMachineProfile/profileType",
    "extra-property": "/workspaceOperation/priority",
    "diagnostics-include-tokens": "/artifacts/agentMachineDiagnosticBundle/tokensIncluded",
    "binding-to-personal-profile": "/artifacts/modelProviderBinding/profileType",
    "not-json": "",
  };

  it("validate exits 0 when every file is valid", async () => {
    const result = await amctl("contract", "validate", "examples/contracts/local-execution.json");
    expect(result).toMatchObject({ code: 0 });
    expect(result.stdout).toContain("local-execution.json: valid");
  });

  it("validate --json reports many files in one array and exits 1 when any is invalid", async () => {
    const files = ["examples/contracts/local-execution.json", ...broken.map((b) => `examples/contracts/broken/${b}.json`)];
    const result = await amctl("contract", "validate", "--json", ...files);
    expect(result.code).toBe(1);
    const reports = JSON.parse(result.stdout) as { file: string; valid: boolean; violations: { path: string; message: string }[] }[];
    expect(reports.map((r) => r.file)).toEqual(files);
    expect(reports[0]).toEqual({ file: files[0], valid: true, violations: [] });
    for (const [index, name] of broken.entries()) {
      const report = reports[index + 1]!;
      expect(report.valid).toBe(false);
      expect(report.violations.map((v) => v.path)).toContain(expectedPaths[name]);
      expect(report.violations.every((v) => v.message.length > 0)).toBe(true);
    }
  });

  it("validate exits 2 and names the file when one cannot be read, still reporting the others", async () => {
    const result = await amctl("contract", "validate", "examples/contracts/local-execution.json", "no/such/file.json");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("no/such/file.json");
    expect(result.stdout).toContain("local-execution.json: valid");
  });

  it("validate without files is a usage error (exit 2)", async () => {
    expect((await amctl("contract", "validate")).code).toBe(2);
  });

  it("show prints the server's own contract, which validates", async () => {
    const shown = await amctl("contract", "show", "--server", server.url);
    expect(shown.code).toBe(0);
    const document = JSON.parse(shown.stdout) as { kind: string };
    expect(document.kind).toBe("WorkspaceOperationContract");
    expect(validateContractDocument(document)).toEqual({ valid: true, violations: [] });
  });

  it("show against an unreachable server exits 2 with a clear message", async () => {
    const result = await amctl("contract", "show", "--server", "http://127.0.0.1:1");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("cannot get the contract from http://127.0.0.1:1");
  });
});

describe("examples/clients/validate-contract.ts (a generated client)", () => {
  const client = (file: string) =>
    run(join(repoRoot, "node_modules/.bin/tsx"), [join(repoRoot, "examples/clients/validate-contract.ts"), server.url, file], {
      cwd: repoRoot,
      env: withToken(),
    }).then(
      ({ stdout }) => ({ code: 0, stdout }),
      (error: { code: number; stdout: string }) => error,
    );

  it("reports a valid contract and exits 0", async () => {
    expect(await client("examples/contracts/local-execution.json")).toMatchObject({ code: 0, stdout: "valid\n" });
  });

  it("reports the violation of a broken contract and exits 1", async () => {
    const result = await client("examples/contracts/broken/extra-property.json");
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("/workspaceOperation/priority: property is not part of the contract");
  });
});
