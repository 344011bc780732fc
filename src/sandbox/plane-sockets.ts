// The plane's side of a sandbox's ways out: unix sockets in a private directory that is bound
// read-only into the sandbox (launcher.ts bridges them to loopback ports inside).
//
//   plane.sock   every connection is piped, byte for byte, to the plane's API address, so an
//                execution talks to the plane exactly as any client does (with its credential)
//   egress.sock  only when the operation was granted egress: every connection carries one
//                HTTP CONNECT request to the plane's egress proxy; this side replaces whatever
//                Proxy-Authorization the request had with the attempt's own credential, so the
//                program inside needs no proxy password and the proxy knows who asks
//
// The directory is 0710 root:<sandbox group> when the server runs as root (only the sandbox's
// group and root get in), 0700 otherwise (the sandbox then runs as the server's own user).
import { chmodSync, chownSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The largest request head the egress side reads before it gives up on a connection. */
const MAX_HEAD_BYTES = 16 * 1024;

export interface PlaneAddress {
  host: string;
  port: number;
}

export interface PlaneSocketsOptions {
  plane: PlaneAddress;
  /** The attempt's credential, sent with every egress request; undefined: no egress socket. */
  egressCredential?: string;
  /** The sandbox's host uid and gid, when the server runs as root. */
  owner?: { uid: number; gid: number };
}

export class PlaneSockets {
  readonly dir: string;
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly options: PlaneSocketsOptions) {
    this.dir = mkdtempSync(join(tmpdir(), "amctl-sandbox-"));
    if (options.owner !== undefined) {
      chownSync(this.dir, 0, options.owner.gid);
      chmodSync(this.dir, 0o710);
    } else {
      chmodSync(this.dir, 0o700);
    }
  }

  static async open(options: PlaneSocketsOptions): Promise<PlaneSockets> {
    const sockets = new PlaneSockets(options);
    try {
      await sockets.listen("plane.sock", (socket) => sockets.pipeToPlane(socket, undefined));
      const credential = options.egressCredential;
      if (credential !== undefined) await sockets.listen("egress.sock", (socket) => sockets.forwardEgress(socket, credential));
      return sockets;
    } catch (error) {
      sockets.close();
      throw error;
    }
  }

  get egress(): boolean {
    return this.options.egressCredential !== undefined;
  }

  /** Stops listening, ends every bridged connection and removes the directory. */
  close(): void {
    for (const server of this.servers) server.close();
    for (const socket of this.sockets) socket.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async listen(name: string, onConnection: (socket: net.Socket) => void): Promise<void> {
    const path = join(this.dir, name);
    const server = net.createServer((socket) => {
      this.track(socket);
      onConnection(socket);
    });
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o666); // the directory is what keeps others out
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
  }

  private pipeToPlane(inside: net.Socket, head: Buffer | undefined): void {
    const plane = net.connect(this.options.plane);
    this.track(plane);
    if (head !== undefined) plane.write(head);
    inside.pipe(plane).pipe(inside);
    plane.on("close", () => inside.destroy());
    inside.on("close", () => plane.destroy());
  }

  /** Reads the request head, puts the attempt's credential in it, then pipes the rest. */
  private forwardEgress(inside: net.Socket, credential: string): void {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buffered.length > MAX_HEAD_BYTES) inside.end("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n");
        return;
      }
      inside.off("data", onData);
      inside.pause();
      const head = withCredential(buffered.subarray(0, end).toString("latin1"), credential);
      this.pipeToPlane(inside, Buffer.concat([Buffer.from(head, "latin1"), buffered.subarray(end)]));
      inside.resume();
    };
    inside.on("data", onData);
  }
}

/** The request head with any Proxy-Authorization removed and the attempt's credential added. */
export function withCredential(head: string, credential: string): string {
  const [requestLine = "", ...headers] = head.split("\r\n");
  const kept = headers.filter((line) => !/^proxy-authorization\s*:/i.test(line));
  return [requestLine, ...kept, `Proxy-Authorization: Bearer ${credential}`].join("\r\n");
}
