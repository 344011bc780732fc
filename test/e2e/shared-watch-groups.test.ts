// The event hub lets live watchers whose filters select the same events share one group (one
// match per event, one list of matches). A caller with a narrow credential must never be put in
// the group of a wider one that asks for the same filter: it would then be handed the wider
// caller's events. Here a wide watcher follows first, two narrow ones with the same (empty)
// filter follow after it, and events are committed in a profile only the wide one may see.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { agentOperationTypes, applyGrant, type Clients, clientsFor, createProfileWith, roomyBudget, wideRoot } from "../helpers/runtime.js";

let server: TestServer;
let root: Clients;

beforeAll(async () => {
  server = await startTestServer({ bookmarkIntervalMs: 600_000 });
  root = await wideRoot(server.url, server.dataDir);
  await createProfileWith(root.operations, "seen", ProfileType.PERSONAL);
  await createProfileWith(root.operations, "hidden", ProfileType.PERSONAL);
});

afterAll(() => server.close());

async function watcher(subject: string, profiles: string[]) {
  const { token } = await root.delegations.issueDelegation({
    subject,
    scope: { operationTypes: agentOperationTypes, profiles, tools: ["*"], modelProviders: ["*"], budget: roomyBudget() },
  });
  const clients = clientsFor(server.url, token);
  const operations: string[] = [];
  const abort = new AbortController();
  const done = (async () => {
    try {
      for await (const response of clients.operations.watchEvents({ afterSequence: 0n }, { signal: abort.signal })) {
        if (response.kind.case === "event") operations.push(response.kind.value.operation);
      }
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Canceled) throw error;
    }
  })();
  const stop = (): Promise<void> => {
    abort.abort();
    return done;
  };
  return { operations, stop };
}

it("a narrow watcher never shares the live events of a wider one with the same filter", async () => {
  const wide = await watcher("wide", ["*"]);
  // The wide one follows live first, so its group exists when the narrow ones catch up.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const narrow = [await watcher("narrow-1", ["profiles/seen"]), await watcher("narrow-2", ["profiles/seen"])];
  await new Promise((resolve) => setTimeout(resolve, 300));

  const hidden = await applyGrant(root.operations, "profiles/hidden", "git");
  const seen = await applyGrant(root.operations, "profiles/seen", "git");
  await expect.poll(() => wide.operations.includes(hidden) && wide.operations.includes(seen), { timeout: 10_000 }).toBe(true);
  for (const each of narrow) await expect.poll(() => each.operations.includes(seen), { timeout: 10_000 }).toBe(true);

  for (const each of narrow) expect(each.operations).not.toContain(hidden);
  // Both narrow ones were handed the same events.
  expect(narrow[0]!.operations).toEqual(narrow[1]!.operations);
  await Promise.all([wide, ...narrow].map((each) => each.stop()));
});
