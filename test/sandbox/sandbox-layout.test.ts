// The pure parts of the sandbox: what bubblewrap is told to show, how the launcher opens the
// ways out, how the egress side sets the credential, and which CONNECT targets are accepted.
import { describe, expect, it } from "vitest";
import { parseAuthority } from "../../src/gateways/egress-proxy.js";
import { bubblewrapOptions, SANDBOX_RUN_DIR } from "../../src/sandbox/bubblewrap-args.js";
import { encodeLaunch, launcherArgv } from "../../src/sandbox/launcher.js";
import { withCredential } from "../../src/sandbox/plane-sockets.js";

const layout = {
  readOnly: ["/opt/amctl"],
  workspace: "/var/lib/amctl/workspaces/01ABC",
  runDir: "/tmp/amctl-sandbox-x",
  cwd: "/var/lib/amctl/workspaces/01ABC/src",
  tmpBytes: 1024,
  mounts: [
    { fd: 6, target: "/project", readWrite: false },
    { fd: 7, target: "/out", readWrite: true },
  ],
};

/** The pairs or triples that follow each occurrence of `flag`. */
function argsAfter(args: string[], flag: string, count: number): string[][] {
  return args.flatMap((arg, index) => (arg === flag ? [args.slice(index + 1, index + 1 + count)] : []));
}

describe("bubblewrap options", () => {
  const args = bubblewrapOptions(layout);

  it("unshares every namespace, forbids new user namespaces, drops capabilities and dies with its parent", () => {
    for (const flag of ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]) expect(args).toContain(flag);
    expect(argsAfter(args, "--cap-drop", 1)).toEqual([["ALL"]]);
    expect(args).not.toContain("--share-net");
  });

  it("binds only the workspace writable; the install and the sockets read-only; nothing of the data dir else", () => {
    expect(argsAfter(args, "--bind", 2)).toEqual([[layout.workspace, layout.workspace]]);
    expect(argsAfter(args, "--ro-bind", 2)).toEqual(
      expect.arrayContaining([
        ["/opt/amctl", "/opt/amctl"],
        [layout.runDir, SANDBOX_RUN_DIR],
      ]),
    );
    expect(args.filter((arg) => arg.startsWith("/var/lib/amctl") && !arg.startsWith(layout.workspace))).toEqual([]);
  });

  it("binds each mount by its descriptor, after the system paths and the sockets, read-only unless it is a workspace mount", () => {
    expect(argsAfter(args, "--ro-bind-fd", 2)).toEqual([["6", "/project"]]);
    expect(argsAfter(args, "--bind-fd", 2)).toEqual([["7", "/out"]]);
    expect(args.indexOf("--ro-bind-fd")).toBeGreaterThan(args.indexOf(SANDBOX_RUN_DIR));
  });

  it("mounts a private, size-capped /tmp before the binds, so a workspace under /tmp stays visible", () => {
    const tmp = args.indexOf("/tmp");
    expect(args.slice(tmp - 3, tmp + 1)).toEqual(["--size", "1024", "--tmpfs", "/tmp"]);
    expect(args.indexOf("--bind")).toBeGreaterThan(tmp);
  });

  it("clears the environment: the execution's own goes to the program through the launcher's pipe", () => {
    expect(args).toContain("--clearenv");
    expect(args).not.toContain("--setenv");
    expect(args).not.toContain("--");
  });
});

describe("the launcher", () => {
  it("has a command line without anything of an attempt's, so it can start before the attempt is known", () => {
    const argv = launcherArgv("/usr/bin/perl");
    expect(argv.slice(0, 2)).toEqual(["/usr/bin/perl", "-e"]);
    expect(argv[2]).toContain(`"${SANDBOX_RUN_DIR}/$socket"`);
    expect(argv).toHaveLength(3);
  });

  it("gets its limits, bridges, program and environment on its pipe, each field ended by a NUL, any name kept", () => {
    const launch = encodeLaunch({
      limits: { prlimitSyscall: 302, cpuSeconds: 30, maxProcesses: 0 },
      bridges: [
        { port: 7070, socket: "plane.sock" },
        { port: 3128, socket: "egress.sock" },
      ],
      argv: ["/usr/bin/env", "-0", ""],
      env: { IFS: "x", "MY.VAR": "a=b", EMPTY: "" },
    });
    expect(launch.toString("utf8").split("\0")).toEqual([
      ...["302", "30", "0", "2", "7070", "plane.sock", "3128", "egress.sock"],
      ...["3", "/usr/bin/env", "-0", ""],
      ...["IFS=x", "MY.VAR=a=b", "EMPTY="],
      "",
    ]);
  });
});

describe("the egress socket's credential", () => {
  it("replaces any Proxy-Authorization the program sent with the attempt's own", () => {
    const head = "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\nproxy-authorization: Basic Zm9vOmJhcg==\r\nUser-Agent: curl";
    expect(withCredential(head, "tok")).toBe(
      "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\nUser-Agent: curl\r\nProxy-Authorization: Bearer tok",
    );
  });
});

describe("CONNECT targets", () => {
  it.each([
    ["example.org:443", { host: "example.org", port: 443 }],
    ["Example.ORG:80", { host: "example.org", port: 80 }],
    ["127.0.0.1:8080", { host: "127.0.0.1", port: 8080 }],
    ["[::1]:443", { host: "::1", port: 443 }],
  ])("accepts %s", (target, expected) => expect(parseAuthority(target)).toEqual(expected));

  it.each(["example.org", "example.org:0", "example.org:70000", "http://example.org:80", "exa mple.org:80", "[::1]", "a/b:80", ""])("refuses %j", (target) => {
    expect(parseAuthority(target)).toBeUndefined();
  });
});
