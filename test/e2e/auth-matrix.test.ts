// Delegated authority on every call. The method list comes from the service descriptors the
// server serves, so a new RPC cannot ship unguarded: every method outside the explicit exempt
// list must refuse each kind of bad credential with Unauthenticated.
import { generateKeyPairSync } from "node:crypto";
import { create, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { SignJWT, base64url } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { importSigningKey } from "../../src/governance/credentials.js";
import { exemptServices } from "../../src/server/auth-interceptor.js";
import { servedServiceDescriptors } from "../../src/server/server.js";
import { bearer, fullScope, mintRoot, operatorOf } from "../helpers/auth.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let server: TestServer;
const bad = new Map<string, string | undefined>();

function transport(token: string | undefined): Transport {
  return createGrpcTransport({ baseUrl: server.url, interceptors: token === undefined ? [] : [bearer(token)] });
}

/** Calls any unary or server-streaming method with an empty request; returns the error code or "ok". */
async function call(method: DescMethod, token: string | undefined): Promise<Code | "ok"> {
  const client = createClient(method.parent, transport(token)) as unknown as Record<string, (req: unknown, opts?: unknown) => unknown>;
  const request = create(method.input);
  try {
    if (method.methodKind === "unary") await client[method.localName]!(request, { timeoutMs: 5_000 });
    else {
      const abort = new AbortController();
      const stream = client[method.localName]!(request, { signal: abort.signal, timeoutMs: 5_000 }) as AsyncIterable<unknown>;
      for await (const _ of stream) break;
      abort.abort();
    }
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

const guardedMethods = servedServiceDescriptors.filter((s) => !exemptServices.has(s.typeName)).flatMap((s) => s.methods);
const exemptMethods = servedServiceDescriptors
  .filter((s) => exemptServices.has(s.typeName))
  .flatMap((s) => s.methods)
  .filter((m) => m.methodKind !== "bidi_streaming");

beforeAll(async () => {
  server = await startTestServer();
  const operator = await operatorOf(server.dataDir);
  const stranger = generateKeyPairSync("ed25519");
  const strangerKey = await importSigningKey(
    stranger.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    stranger.publicKey.export({ type: "spki", format: "pem" }) as string,
    "operator",
  );
  const valid = await mintRoot(operator);
  const [header, payload, signature] = valid.split(".") as [string, string, string];
  const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload))) as Record<string, unknown>;
  const resign = (changes: Record<string, unknown>) =>
    new SignJWT({ ...claims, ...changes }).setProtectedHeader({ alg: "EdDSA", kid: operator.keyId }).sign(operator.key);

  // A root revoked by itself, and a child whose root is revoked.
  const doomedRoot = await mintRoot(operator);
  const child = await createClient(DelegationService, transport(doomedRoot)).issueDelegation({
    subject: "agent",
    scope: { operationTypes: [OperationType.TOOL_GRANT_APPLY], profiles: ["*"] },
  });
  const revokedRoot = await mintRoot(operator);
  const revokedRootName = (await createClient(DelegationService, transport(revokedRoot)).whoAmI({})).delegation!.name;
  await createClient(DelegationService, transport(revokedRoot)).revokeDelegation({ name: revokedRootName });
  const doomedName = (await createClient(DelegationService, transport(doomedRoot)).whoAmI({})).delegation!.name;
  await createClient(DelegationService, transport(doomedRoot)).revokeDelegation({ name: doomedName });

  bad.set("no credential", undefined);
  bad.set("not a JWT", "garbage");
  bad.set("expired", await mintRoot(operator, { notBefore: new Date(Date.now() - 7200_000), expires: new Date(Date.now() - 3600_000) }));
  bad.set("not yet valid", await mintRoot(operator, { notBefore: new Date(Date.now() + 3600_000), expires: new Date(Date.now() + 7200_000) }));
  bad.set("revoked itself", revokedRoot);
  bad.set("ancestor revoked", child.token);
  bad.set("alg none", `${base64url.encode(JSON.stringify({ alg: "none", kid: operator.keyId }))}.${payload}.`);
  bad.set(
    "HS256 signed with our public key",
    await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: operator.keyId }).sign(new TextEncoder().encode(await operatorPublicPem())),
  );
  bad.set("wrong audience", await resign({ aud: "someone-else" }));
  bad.set("wrong issuer", await resign({ iss: "amctl-operator:other" }));
  bad.set("unknown key id", await mintRoot(strangerKey));
  bad.set("tampered signature", `${header}.${payload}.${signature.slice(0, -4)}${signature.slice(-4) === "AAAA" ? "BBBB" : "AAAA"}`);
  bad.set("tampered claims", `${header}.${base64url.encode(JSON.stringify({ ...claims, sub: "mallory" }))}.${signature}`);

  async function operatorPublicPem(): Promise<string> {
    const { readFileSync } = await import("node:fs");
    const { operatorKeyFiles } = await import("../../src/governance/operator-key.js");
    return readFileSync(operatorKeyFiles(server.dataDir).publicKey, "utf8");
  }
});
afterAll(() => server.close());

describe("every guarded method refuses every bad credential with Unauthenticated", () => {
  it("enumerates the served methods", () => {
    expect(guardedMethods.map((m) => `${m.parent.name}.${m.name}`)).toEqual(
      expect.arrayContaining([
        "ContractService.ValidateContract",
        "OperationService.SubmitOperation",
        "OperationService.WatchEvents",
        "DelegationService.IssueDelegation",
        "DelegationService.WhoAmI",
      ]),
    );
  });

  const kinds = [
    "no credential",
    "not a JWT",
    "expired",
    "not yet valid",
    "revoked itself",
    "ancestor revoked",
    "alg none",
    "HS256 signed with our public key",
    "wrong audience",
    "wrong issuer",
    "unknown key id",
    "tampered signature",
    "tampered claims",
  ];
  it.each(guardedMethods.flatMap((m) => kinds.map((kind) => [`${m.parent.name}.${m.name}`, kind, m] as const)))("%s with %s", async (_name, kind, method) => {
    expect(bad.has(kind)).toBe(true);
    expect(await call(method, bad.get(kind))).toBe(Code.Unauthenticated);
  });

  it.each(exemptMethods.map((m) => [`${m.parent.name}.${m.name}`, m] as const))("%s is exempt and answers without a credential", async (_name, method) => {
    expect(await call(method, undefined)).not.toBe(Code.Unauthenticated);
  });

  it("a valid credential passes authentication on every guarded method", async () => {
    for (const method of guardedMethods) {
      const outcome = await call(method, server.token);
      expect([Code.Unauthenticated, Code.PermissionDenied]).not.toContain(outcome);
    }
  });
});

describe("a valid credential out of scope is PermissionDenied", () => {
  it("names the axis it lacks", async () => {
    const operator = await operatorOf(server.dataDir);
    const narrow = await mintRoot(operator, {
      scope: { ...fullScope, operationTypes: [OperationType.PROFILE_CREATE], profiles: ["profiles/mine"], mayDelegate: false },
    });
    const { operationsClient } = await import("../helpers/operations.js");
    const { registerToken } = await import("../helpers/tokens.js");
    const url = `${server.url}/`;
    registerToken(url, narrow);
    const client = operationsClient(url);
    await client.submitOperation({ requestId: "mine-1", spec: { kind: { case: "profileCreate", value: { profileId: "mine", profileType: 1 } } } });
    const denials = await Promise.all(
      [
        client.submitOperation({ requestId: "theirs-1", spec: { kind: { case: "profileCreate", value: { profileId: "theirs", profileType: 1 } } } }),
        client.submitOperation({ requestId: "exec-1", profile: "profiles/mine", spec: { kind: { case: "executionStart", value: { argv: ["true"] } } } }),
        createClient(DelegationService, transport(narrow)).issueDelegation({ subject: "x", scope: {} }),
      ].map((p) =>
        p.then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        ),
      ),
    );
    expect(denials.map((d) => d?.code)).toEqual([Code.PermissionDenied, Code.PermissionDenied, Code.PermissionDenied]);
    expect(denials.map((d) => d?.metadata.get("x-request-id") !== null)).toEqual([true, true, true]);
  });
});

it("no credential ever appears in the server's logs", () => {
  const logged = JSON.stringify(server.logs);
  for (const token of [server.token, ...[...bad.values()].filter((t): t is string => t !== undefined && t.length > 20)]) {
    expect(logged).not.toContain(token.split(".")[2] || token);
  }
});
