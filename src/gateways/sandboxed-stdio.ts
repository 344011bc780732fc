// An MCP stdio transport whose server runs inside a sandbox of its own (src/sandbox/): the
// operator's command gets the same confinement as an execution (its own uid, PID, mount and
// network namespaces, a private workspace as the only writable path), and no network but
// the plane's port, where it holds no credential, and, when its declaration lists egress
// destinations, the plane's egress proxy (HTTP_PROXY) under a credential of its own that lets
// it reach those only (mcp-upstream-egress.ts). The SDK's StdioClientTransport cannot be
// used: bubblewrap reads its options and the program's environment from extra descriptors.
import type { ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { resolveExecutable } from "../process/resolve-executable.js";
import type { PreparedSandbox, Sandboxes } from "../sandbox/sandbox.js";
import type { PlaneAddress } from "../sandbox/plane-sockets.js";
import type { EgressDestination, UpstreamEgress } from "./mcp-upstream-egress.js";

/** Memory an upstream's sandbox may hold. */
const UPSTREAM_MEMORY_BYTES = 1024 * 1024 * 1024;
const SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin";

export interface SandboxedStdioOptions {
  sandboxes: Sandboxes;
  /** The upstream's name: its workspace is `<dir>/<name>`. */
  name: string;
  dir: string;
  command: readonly string[];
  plane: PlaneAddress;
  /** What it may reach through the egress proxy (none: no proxy at all), and who issues its credential. */
  egress: readonly EgressDestination[];
  credentials: UpstreamEgress;
}

export class SandboxedStdioTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private child: ChildProcess | undefined;
  private sandbox: PreparedSandbox | undefined;
  private revokeEgress: (() => void) | undefined;
  private readonly buffer = new ReadBuffer();

  constructor(private readonly options: SandboxedStdioOptions) {}

  async start(): Promise<void> {
    const { sandboxes, name, dir, command, plane, egress, credentials } = this.options;
    const workspace = join(dir, name);
    mkdirSync(workspace, { recursive: true, mode: 0o700 });
    const [program, ...args] = command as [string, ...string[]];
    const executable = resolveExecutable(program, SYSTEM_PATH);
    // Revoked when the sandbox ends (ended()), also when it fails to start: the client closes it.
    const issued = egress.length > 0 ? credentials.issue({ upstream: name, egress }) : undefined;
    this.revokeEgress = issued?.revoke;
    const sandbox = await sandboxes.prepare({
      workspace,
      cwd: workspace,
      argv: [executable, ...args],
      env: { PATH: SYSTEM_PATH, HOME: workspace },
      plane,
      cpuSeconds: 0,
      memoryBytes: UPSTREAM_MEMORY_BYTES,
      mounts: [],
      stdin: true,
      ...(issued !== undefined ? { egressCredential: issued.credential } : {}),
    });
    this.sandbox = sandbox;
    const child = sandbox.child;
    this.child = child;
    // Its stderr and progress pipe are read by no one: drained so a chatty upstream never blocks.
    child.stderr?.resume();
    (child.stdio[3] as Readable | null)?.resume();
    (child.stdout as Readable).on("data", (chunk: Buffer) => {
      this.buffer.append(chunk);
      for (let message = this.read(); message !== undefined; message = this.read()) this.onmessage?.(message);
    });
    child.on("error", (error) => this.onerror?.(error));
    child.once("exit", () => this.ended());
    sandbox.start();
  }

  private read(): JSONRPCMessage | undefined {
    try {
      return this.buffer.readMessage() ?? undefined;
    } catch (error) {
      this.onerror?.(error as Error);
      return undefined;
    }
  }

  send(message: JSONRPCMessage): Promise<void> {
    return new Promise((resolve) => {
      const stdin = this.child?.stdin;
      if (stdin == null || stdin.destroyed) {
        resolve();
        return;
      }
      if (stdin.write(serializeMessage(message))) resolve();
      else stdin.once("drain", resolve);
    });
  }

  async close(): Promise<void> {
    this.sandbox?.killAll();
    this.child?.kill("SIGKILL");
    this.ended();
  }

  private ended(): void {
    this.revokeEgress?.();
    this.revokeEgress = undefined;
    if (this.sandbox === undefined) return;
    this.sandbox.close();
    this.sandbox = undefined;
    this.buffer.clear();
    this.onclose?.();
  }
}
