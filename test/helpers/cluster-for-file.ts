// The PostgreSQL cluster of one test file (see postgres.ts), started and stopped by vitest hooks.
import { afterAll, beforeAll } from "vitest";
import { startPostgresCluster, type PostgresCluster } from "./postgres.js";

/**
 * A cluster for the test file that calls this at its top level: started before its tests,
 * stopped after them. The hook waits long enough for apt-get to install PostgreSQL on a machine
 * that lacks it. A cluster that cannot be had is not the hook's failure but every test's (in
 * `cluster`): a failing hook would leave the tests reported as skipped, and a missing database
 * must fail the suite, never skip it.
 */
export function clusterForFile(): { cluster: () => Promise<PostgresCluster>; database: (prefix?: string) => Promise<string> } {
  let started: Promise<PostgresCluster> | undefined;
  beforeAll(async () => {
    started = startPostgresCluster();
    await started.catch(() => undefined);
  }, 600_000);
  afterAll(async () => {
    await (await started?.catch(() => undefined))?.stop();
  });
  const cluster = (): Promise<PostgresCluster> => started ?? Promise.reject(new Error("the PostgreSQL cluster was never started"));
  return { cluster, database: async (prefix) => (await cluster()).createDatabase(prefix) };
}
