// The plane's egress proxy: the only way from a sandboxed execution to any host but the plane.
// It answers HTTP CONNECT on the server's own port (HTTP/1.1), so an execution on a remote
// worker reaches it the same way as a local one: its sandbox's egress socket forwards each
// connection here with the attempt's credential put in `Proxy-Authorization: Bearer …`
// (src/sandbox/plane-sockets.ts). For every CONNECT:
//
//   1. the credential must be an execution credential of a running attempt whose operation
//      was granted egress at admission (spec `network` and an allowing networkProfile gate);
//   2. the connection is decided by the same path as RuntimeService.AuthorizeCall: a connector
//      call to `host:port` (scope, profile rules — airgapped never — and the networkProfile
//      gate, whose CEL input carries `destination_host` and `destination_port`);
//   3. an allowed connection charges one connector call (refused, charging nothing, when
//      that would exhaust the budget, which ends the task);
//   4. every connection is audited: refused ones when refused, allowed ones when they close,
//      with the bytes each way (AuditRecord.egress).
//
// An MCP stdio upstream's sandbox uses the same proxy with a credential of its own
// (mcp-upstream-egress.ts): it may reach the destinations its declaration lists and no others,
// charging nothing (it runs no operation), each connection audited the same way under
// `mcp-upstreams/<name>`.
//
// Anything but CONNECT (a plain-HTTP request in absolute form) is refused with 405: the proxy
// tunnels, it does not rewrite requests; HTTPS clients and `curl --proxytunnel` use CONNECT.
import { createHash } from "node:crypto";
import type * as http from "node:http";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { allowedDecision, denialOf, type AuditDecisionInit } from "../audit/decisions.js";
import type { AuditDraft } from "../model/audit-chain.js";
import { Code } from "../gen/google/rpc/code_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import { OperationType, PolicyGate } from "../gen/agentmachine/v1/types_pb.js";
import { networkEgressAllowed } from "../executors/container-invocation.js";
import type { Authority, Principal } from "../governance/authority.js";
import { bearerToken } from "../governance/bearer.js";
import { admitCall, attemptOfToken, executionCallDraft, type RuntimeCallDeps } from "./runtime-call.js";
import { egressListed, type UpstreamEgress, type UpstreamEgressHolder } from "./mcp-upstream-egress.js";
import type { Logger } from "../api/logger.js";

export const EGRESS_RPC = "egress";

export interface EgressProxyDeps extends RuntimeCallDeps {
  authority: Authority;
  log: Logger;
  /** Whether commands are audited (config.audit). */
  audit: boolean;
  /** The credentials of MCP upstreams that may reach listed destinations. */
  upstreamEgress?: UpstreamEgress;
}

/** The rule an MCP upstream's connection is decided by: its declaration's egress list. */
const UPSTREAM_EGRESS_RULE = "mcp-upstream-egress-list";

/** `host:port` of a CONNECT request target, or undefined when it is not one. */
export function parseAuthority(target: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(target);
  const port = Number(match?.[3]);
  if (match === null || !(port >= 1 && port <= 65535)) return undefined;
  return { host: (match[1] ?? match[2]!).toLowerCase(), port };
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly decision: AuditDecisionInit,
  ) {
    super(decision.reason ?? statusText);
  }
}

function refusal(status: number, statusText: string, code: Code, reason: string): Refusal {
  return new Refusal(status, statusText, { allowed: false, denialCode: code, reason });
}

function answer(socket: Duplex, status: number, statusText: string, reason: string): void {
  const body = `${reason}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${statusText}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function egressProxy(deps: EgressProxyDeps) {
  const { store, authority, log } = deps;

  function draft(
    principal: Principal | undefined,
    operation: string,
    target: string,
    destination: { host: string; port: number },
    decision: AuditDecisionInit,
    bytes = { sent: 0n, received: 0n },
    caller: Partial<AuditDraft> = {},
  ): AuditDraft {
    const requestDigest = createHash("sha256").update(`CONNECT ${target}`).digest("hex");
    return executionCallDraft(principal, { rpc: EGRESS_RPC, commandRef: "EgressConnection", operation, requestDigest }, decision, {
      egress: { host: destination.host, port: destination.port, bytesSent: bytes.sent, bytesReceived: bytes.received },
      ...caller,
    });
  }

  /** An MCP upstream's connection: tunnelled when its declaration lists the destination, else refused. */
  function openForUpstream(holder: UpstreamEgressHolder, socket: Duplex, head: Buffer, target: string, destination: { host: string; port: number }): void {
    const audit = (decision: AuditDecisionInit, bytes?: { sent: bigint; received: bigint }): void =>
      record(
        draft(undefined, `mcp-upstreams/${holder.upstream}`, target, destination, { ...decision, rule: UPSTREAM_EGRESS_RULE }, bytes, {
          principal: `mcp-upstream:${holder.upstream}`,
          operationType: OperationType.UNSPECIFIED,
        }),
      );
    if (!egressListed(holder, destination)) {
      const reason = `${target} is not in the egress list of MCP upstream ${holder.upstream}`;
      answer(socket, 403, "Forbidden", `amctl egress proxy: ${reason}`);
      audit({ allowed: false, denialCode: Code.PERMISSION_DENIED, reason });
      return;
    }
    tunnel(socket, head, destination, target, (bytes) => audit({ allowed: true }, bytes));
  }

  /** The running attempt the credential belongs to, if it may use the proxy. */
  async function attemptOf(request: http.IncomingMessage): Promise<{ principal: Principal; operation: Operation }> {
    const header = request.headers["proxy-authorization"] ?? "";
    const token = bearerToken(header);
    if (token === undefined)
      throw refusal(407, "Proxy Authentication Required", Code.UNAUTHENTICATED, "the egress proxy needs an execution credential (Proxy-Authorization: Bearer)");
    const attempt = await attemptOfToken(authority, store, token);
    if (attempt.refusal === "unauthenticated") throw refusal(407, "Proxy Authentication Required", Code.UNAUTHENTICATED, attempt.error.rawMessage);
    if (attempt.refusal === "not-an-attempt")
      throw refusal(403, "Forbidden", Code.PERMISSION_DENIED, "only a running execution's own credential may use the egress proxy");
    const { principal, operation } = attempt;
    if (!networkEgressAllowed(operation)) {
      throw new Refusal(403, "Forbidden", {
        allowed: false,
        denialCode: Code.PERMISSION_DENIED,
        gates: [PolicyGate.NETWORK_PROFILE],
        reason: `${operation.name} was not granted network egress at admission`,
      });
    }
    return { principal, operation };
  }

  async function open(request: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const target = request.url ?? "";
    const destination = parseAuthority(target);
    if (request.method !== "CONNECT" || destination === undefined) {
      answer(socket, 400, "Bad Request", "the egress proxy takes CONNECT host:port");
      return;
    }
    const upstream = deps.upstreamEgress?.holderOf(bearerToken(request.headers["proxy-authorization"] ?? "") ?? "");
    if (upstream !== undefined) {
      openForUpstream(upstream, socket, head, target, destination);
      return;
    }
    let principal: Principal | undefined;
    let operation = "";
    try {
      let running: Operation;
      ({ principal, operation: running } = await attemptOf(request));
      operation = running.name;
      const call = create(RuntimeCallSchema, { kind: CallKind.CONNECTOR, connector: `${destination.host}:${destination.port}` });
      const admission = await admitCall(deps, principal, running, call, { destination }).catch((error: unknown) => {
        if (!(error instanceof ConnectError)) throw error;
        throw refusal(403, "Forbidden", Code.FAILED_PRECONDITION, `${operation} is not running`);
      });
      if (!admission.allowed && admission.exhausted !== undefined)
        throw refusal(403, "Forbidden", Code.RESOURCE_EXHAUSTED, `the connection would exhaust the ${admission.exhausted} budget; the task is ended`);
      if (!admission.allowed) throw new Refusal(403, "Forbidden", denialOf(admission.denial));
      const { decisions } = admission;
      tunnel(socket, head, destination, target, (bytes) => record(draft(principal, operation, target, destination, allowedDecision(decisions), bytes)));
    } catch (error) {
      if (!(error instanceof Refusal)) {
        log.error({ err: error, operation }, "egress proxy failed");
        answer(socket, 500, "Internal Server Error", "the egress proxy failed; see the server log");
        return;
      }
      answer(socket, error.status, error.statusText, `amctl egress proxy: ${error.message}`);
      record(draft(principal, operation, target, destination, error.decision));
    }
  }

  function record(audit: AuditDraft): void {
    if (!deps.audit) return;
    store.appendAudit(audit).catch((error: unknown) => log.error({ err: error }, "could not audit an egress connection"));
  }

  function tunnel(
    client: Duplex,
    head: Buffer,
    destination: { host: string; port: number },
    target: string,
    closed: (bytes: { sent: bigint; received: bigint }) => void,
  ): void {
    let sent = BigInt(head.length);
    let received = 0n;
    const upstream = net.connect(destination.port, destination.host);
    let established = false;
    upstream.once("connect", () => {
      established = true;
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      client.on("data", (chunk: Buffer) => (sent += BigInt(chunk.length)));
      upstream.on("data", (chunk: Buffer) => (received += BigInt(chunk.length)));
      client.pipe(upstream).pipe(client);
    });
    upstream.on("error", (error: NodeJS.ErrnoException) => {
      if (!established) answer(client, 502, "Bad Gateway", `amctl egress proxy: cannot connect to ${target}: ${error.code ?? "error"}`);
      else client.destroy();
    });
    client.on("error", () => upstream.destroy());
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      upstream.destroy();
      client.destroy();
      closed({ sent: established ? sent : 0n, received });
    };
    upstream.once("close", finish);
    client.once("close", finish);
  }

  return (request: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on("error", () => socket.destroy());
    void open(request, socket, head);
  };
}

/** Answers a plain-HTTP proxy request (absolute-form URL): refused, the proxy only tunnels. */
export function refusePlainProxyRequest(res: http.ServerResponse): void {
  res
    .writeHead(405, { "Content-Type": "text/plain; charset=utf-8", Allow: "CONNECT" })
    .end("amctl egress proxy: only CONNECT is supported (use https, or curl --proxytunnel)\n");
}
