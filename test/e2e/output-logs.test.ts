// An execution's output through the API and `amctl logs`, over real sockets, sandboxed: replay
// from byte offsets with stdout and stderr apart, the end of each stream with its length and
// whether it was truncated, `amctl logs -f` showing every line exactly once across a broken
// connection and a server restart, a remote worker's output readable after the worker and its
// workspace are gone, and output removed after its retention period.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OutputStream } from "../../src/gen/agentmachine/v1/output_pb.js";
import { defaultConfig } from "../../src/config/config.js";
import { TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { amctl, spawnAmctl } from "../helpers/cli.js";
import { startCountingProxy } from "../helpers/counting-proxy.js";
import { createProfile, execution, operationsClient, waitForEnd, type OperationsClient } from "../helpers/operations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { startWorker, stopWorker, workerToken } from "../helpers/workers.js";
import { expectEveryLineOnce, lines, outputClient, readAll, type OutputClient } from "../helpers/output.js";

describe("a local execution's output", () => {
  let server: TestServer;
  let client: OperationsClient;
  let output: OutputClient;
  let profile: string;
  beforeAll(async () => {
    server = await startTestServer({ execution: { ...defaultConfig.execution, outputLimitBytes: 4096 } });
    client = operationsClient(server.url);
    output = outputClient(server);
    profile = await createProfile(client, "logs");
  });
  afterAll(() => server?.close());

  it("replays stdout and stderr apart from any byte offset, each ended with its length; an offset beyond the end is OutOfRange", async () => {
    const { operation } = await client.submitOperation(execution(profile, lines(20, 1)));
    expect((await waitForEnd(client, operation!.name)).operation.state).toBe(TaskState.COMPLETED);
    const expected = Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join("");
    const whole = await readAll(output, { name: operation!.name });
    expect(whole.text).toEqual({ stdout: expected, stderr: "err 0\nerr 10\n" });
    // Each stream's end, in whichever order they came.
    expect(whole.ends).toHaveLength(2);
    expect(whole.ends).toEqual(
      expect.arrayContaining([
        { stream: "stdout", offset: BigInt(expected.length), truncated: false, attempt: 1 },
        { stream: "stderr", offset: 13n, truncated: false, attempt: 1 },
      ]),
    );
    // One stream, from an offset inside a line.
    const tail = await readAll(output, { name: operation!.name, streams: [OutputStream.STDOUT], stdoutOffset: 100n });
    expect(tail.text).toEqual({ stdout: expected.slice(100), stderr: "" });
    const stderr = await readAll(output, { name: operation!.name, attempt: 1, streams: [OutputStream.STDERR], stderrOffset: 6n });
    expect(stderr.text.stderr).toBe("err 10\n");
    // At the end: just the end.
    expect((await readAll(output, { name: operation!.name, streams: [OutputStream.STDERR], stderrOffset: 13n })).ends).toHaveLength(1);
    const beyond = await readAll(output, { name: operation!.name, stdoutOffset: BigInt(expected.length + 1) }).catch((error: unknown) =>
      ConnectError.from(error),
    );
    expect(beyond).toMatchObject({ code: 11 /* OutOfRange */, rawMessage: expect.stringContaining("beyond") });
    // An attempt that never ran.
    const never = await readAll(output, { name: operation!.name, attempt: 2 }).catch((error: unknown) => ConnectError.from(error));
    expect(never).toMatchObject({ code: 5 /* NotFound */ });
  });

  it("reports truncation: the stream ends at the output limit with truncated set, and amctl logs says so", async () => {
    const { operation } = await client.submitOperation(execution(profile, [process.execPath, "-e", 'process.stdout.write("x".repeat(10000))']));
    const { operation: ended } = await waitForEnd(client, operation!.name);
    expect(ended.artifact?.kind.case === "localAgentExecution" && ended.artifact.kind.value.outputTruncated).toBe(true);
    const read = await readAll(output, { name: operation!.name, streams: [OutputStream.STDOUT] });
    expect(read.text.stdout).toBe("x".repeat(4096));
    expect(read.ends).toEqual([{ stream: "stdout", offset: 4096n, truncated: true, attempt: 1 }]);
    const logs = await amctl(["logs", operation!.name], { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token });
    expect(logs).toMatchObject({ code: 0, stdout: "x".repeat(4096) });
    expect(logs.stderr).toContain("truncated at 4096 bytes");
  });

  it("a record operation has no output: FailedPrecondition", async () => {
    const error = await readAll(output, { name: profile.replace("profiles/", "operations/") }).catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    const { operation } = await client.submitOperation({
      requestId: `g-${Date.now()}`,
      profile,
      spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
    });
    await waitForEnd(client, operation!.name);
    const refused = await readAll(output, { name: operation!.name }).catch((e: unknown) => ConnectError.from(e));
    expect(refused).toMatchObject({ code: 9 /* FailedPrecondition */ });
  });

  it("amctl submit --wait --follow-output prints the program's stdout and stderr as they come, amctl's own lines on stderr", async () => {
    const result = await amctl(["submit", "--profile", profile, "--exec", "--follow-output", "--", ...lines(12, 5)], {
      AMCTL_SERVER: server.url,
      AMCTL_TOKEN: server.token,
    });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.split("\n").filter(Boolean)).toEqual(Array.from({ length: 12 }, (_, i) => `line ${i}`));
    expect(result.stderr).toContain("err 0\nerr 10\n");
    expect(result.stderr).toMatch(/: completed$/m);
  });
});

describe("amctl logs -f", () => {
  it("shows every line exactly once across a broken connection and a server restart", { timeout: 90_000 }, async () => {
    const first = await startTestServer();
    const client = operationsClient(first.url);
    const profile = await createProfile(client, "follow");
    const proxy = await startCountingProxy(first.port);
    let second: TestServer | undefined;
    try {
      const { operation } = await client.submitOperation(execution(profile, lines(400, 50)));
      const follower = spawnAmctl(["logs", "-f", operation!.name], { AMCTL_SERVER: proxy.url, AMCTL_TOKEN: first.token });
      await follower.waitForLine((line) => line === "line 10");
      proxy.cut();
      await follower.waitForLine((line) => line === "line 40");
      // The restart ends the execution (its process is stopped as the new server's orphan); the
      // follower reconnects to the new server on the same port and gets what was kept, then the end.
      await first.close();
      second = await startTestServer({ dataDir: first.dataDir, port: first.port });
      const { code, stderr } = await follower.exited;
      expect(code, stderr).toBe(0);
      const printed = follower.lines;
      expect(printed.length).toBeGreaterThan(40);
      expect(printed.length).toBeLessThan(400);
      expectEveryLineOnce(printed, printed.length);
      // What the follower printed is everything the server kept of stdout.
      const kept = await readAll(outputClient(second), { name: operation!.name, streams: [OutputStream.STDOUT] });
      expect(kept.text.stdout).toBe(printed.map((line) => `${line}\n`).join(""));
    } finally {
      await proxy.close();
      await second?.close();
      if (second === undefined) await first.close();
    }
  });

  it("resumed with --since-offset, prints the rest of the stream only", async () => {
    const server = await startTestServer();
    try {
      const client = operationsClient(server.url);
      const profile = await createProfile(client, "since");
      const { operation } = await client.submitOperation(execution(profile, lines(30, 20)));
      const env = { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token };
      const followed = await amctl(["logs", "-f", operation!.name], env);
      expect(followed.code, followed.stderr).toBe(0);
      expectEveryLineOnce(followed.stdout.trimEnd().split("\n"), 30);
      const offset = followed.stdout.indexOf("line 25");
      const rest = await amctl(["logs", "--since-offset", String(offset), operation!.name], env);
      expect(rest.stdout).toBe(followed.stdout.slice(offset));
      const stderr = await amctl(["logs", "--stderr", "--attempt", "1", operation!.name], env);
      expect(stderr.stdout).toBe("err 0\nerr 10\nerr 20\n");
    } finally {
      await server.close();
    }
  });
});

describe("a remote worker's output", () => {
  it("is streamed to the server as it is produced and readable after the worker and its workspace are gone", { timeout: 60_000 }, async () => {
    const server = await startTestServer({ remoteWorkers: { leaseTtlMs: 1500 } });
    try {
      const client = operationsClient(server.url);
      const profile = await createProfile(client, "remote");
      const worker = startWorker(server.url, await workerToken(server.dataDir, "worker-logs"));
      await worker.name();
      const { operation } = await client.submitOperation(execution(profile, lines(100, 50)));
      // Output of a running task is readable before it ends.
      await expect.poll(async () => (await readAll(outputClient(server), { name: operation!.name })).text.stdout, { timeout: 20_000 }).toContain("line 3\n");
      expect((await client.getOperation({ name: operation!.name })).operation?.state).toBe(TaskState.RUNNING);
      const follower = spawnAmctl(["logs", "-f", operation!.name], { AMCTL_SERVER: server.url, AMCTL_TOKEN: server.token });
      expect((await follower.exited).code).toBe(0);
      expectEveryLineOnce(follower.lines, 100);
      expect((await waitForEnd(client, operation!.name)).operation.worker).toBe(await worker.name());
      await stopWorker(worker);
      expect(existsSync(join(worker.workDir!, operation!.name.replace("operations/", "")))).toBe(false);
      const read = await readAll(outputClient(server), { name: operation!.name });
      expect(read.text.stdout).toBe(Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join(""));
      expect(read.text.stderr).toBe(Array.from({ length: 10 }, (_, i) => `err ${i * 10}\n`).join(""));
      expect(read.ends.map((end) => end.truncated)).toEqual([false, false]);
    } finally {
      await server.close();
    }
  });
});

describe("retention", () => {
  it("output is removed after the output retention period: OutOfRange OUTPUT_REMOVED", async () => {
    const server = await startTestServer({ outputRetentionMs: 1, compactionIntervalMs: 100 });
    try {
      const client = operationsClient(server.url);
      const profile = await createProfile(client, "retention");
      const { operation } = await client.submitOperation(execution(profile, ["echo", "gone soon"]));
      await waitForEnd(client, operation!.name);
      await expect
        .poll(async () => (await readAll(outputClient(server), { name: operation!.name }).catch((e: unknown) => ConnectError.from(e))) as unknown, {
          timeout: 5000,
        })
        .toMatchObject({ code: 11, rawMessage: expect.stringContaining("no longer kept") });
    } finally {
      await server.close();
    }
  });
});
