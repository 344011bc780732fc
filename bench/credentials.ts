// The benchmark's credential. Every call but Health and reflection must carry a bearer credential
// that the server's authority verifies. The bench does what an operator does: an operator key for
// the server's data dir before it starts (as `amctl init` writes it: the public key in the data
// dir, so the server trusts it; the private key outside, in the helpers' temporary AMCTL_CONFIG_DIR),
// and a root credential with the full scope signed by it (as `amctl delegation root` would; the
// signing is the test helpers', test/helpers/auth.ts). Workers get it in BENCH_BEARER_TOKEN.
// Its budget (the helpers' full scope: 2^40 of every consumable) must cover what the bench's
// executions reserve at admission (bench/executions.ts asks for 10^9 model and connector calls
// and tokens); it lists no policy_profile_types, since the bench never changes a bundle.
import type { Interceptor } from "@connectrpc/connect";
import { bearer, mintRoot, operatorOf } from "../test/helpers/auth.js";

const TOKEN_ENV = "BENCH_BEARER_TOKEN";

/** Creates the operator key of the data dir and returns a full-scope root credential, valid for a day. */
export async function mintBenchCredential(dataDir: string): Promise<string> {
  return mintRoot(await operatorOf(dataDir), { subject: "bench", expires: new Date(Date.now() + 24 * 3600_000) });
}

/** Environment for a worker process that calls the server with `token`. */
export function credentialEnv(token: string): NodeJS.ProcessEnv {
  return { ...process.env, [TOKEN_ENV]: token };
}

/** In a worker: the credential it was given (empty when none). */
export function workerToken(): string {
  return process.env[TOKEN_ENV] ?? "";
}

/** Client interceptors that send `token` (none for an empty one). */
export function credentialInterceptors(token: string): Interceptor[] {
  return token === "" ? [] : [bearer(token)];
}
