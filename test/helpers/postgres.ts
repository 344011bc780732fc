// A throwaway PostgreSQL cluster for a test file: initdb on a private temp dir, started on a
// private port and a private unix socket dir, with fsync on (commits cost what they cost in
// production). Each test gets a database of its own. `stop` kills the cluster and removes
// everything. If PostgreSQL is not installed it is installed from Debian's packages; if that is
// impossible the caller fails — a missing database must never turn into skipped tests.
import { execFile, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { ensureDebianPackages } from "./debian-packages.js";

const run = promisify(execFile);

export interface PostgresCluster {
  /** Milliseconds from initdb to a server accepting connections. */
  startMs: number;
  /** A `postgres://` URL of a new, empty database. */
  createDatabase(prefix?: string): Promise<string>;
  /** Shuts the server down as an operator's restart does (`-m fast`: clients are disconnected), keeping its data. */
  stopServer(): Promise<void>;
  /** Starts the server again after stopServer, on the same port. */
  startServer(): Promise<void>;
  /** Stops the server at once (`-m immediate`) and removes its directory. */
  stop(): Promise<void>;
}

const isRoot = process.getuid?.() === 0;

function binDirOnPath(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"))) return dir;
  }
  return undefined;
}

function binDirInstalled(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((version) => existsSync(join(root, version, "bin", "initdb")) && existsSync(join(root, version, "bin", "pg_ctl")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] && join(root, versions[0], "bin");
}

const findBinDir = (): string | undefined => binDirOnPath() ?? binDirInstalled();

/** initdb and pg_ctl's directory, installing PostgreSQL first if it is missing. */
async function postgresBinDir(): Promise<string> {
  const found = findBinDir();
  if (found) return found;
  await ensureDebianPackages(["postgresql"]);
  const installed = findBinDir();
  if (!installed) throw new Error("apt-get installed postgresql, but initdb and pg_ctl are still not found (PATH, /usr/lib/postgresql/*/bin)");
  return installed;
}

/** Runs a PostgreSQL program; as root, as the `postgres` user (the server refuses to run as root). */
async function runAsOwner(program: string, args: string[], cwd: string): Promise<void> {
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C", LANG: "C" };
  const [command, commandArgs] = isRoot ? ["runuser", ["-u", "postgres", "--", program, ...args]] : [program, args];
  try {
    await run(command, commandArgs, { cwd, env, timeout: 120_000 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`${program} ${args.join(" ")} failed: ${String(error)}\n${stdout ?? ""}${stderr ?? ""}`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

function ownerIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout.trim());
  const ids = { uid: id("-u"), gid: id("-g") };
  if (!Number.isInteger(ids.uid) || ids.uid <= 0) throw new Error("running as root, but there is no `postgres` user to run the server as");
  return ids;
}

export async function startPostgresCluster(): Promise<PostgresCluster> {
  const binDir = await postgresBinDir();
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), "amctl-pg-"));
  const data = join(dir, "data");
  const socketDir = join(dir, "sock");
  const log = join(dir, "server.log");
  mkdirSync(socketDir);
  if (isRoot) {
    const { uid, gid } = ownerIds();
    for (const path of [dir, socketDir]) chownSync(path, uid, gid);
  }
  let running = false;
  const stopNow = (): void => {
    if (running)
      spawnSync(
        isRoot ? "runuser" : join(binDir, "pg_ctl"),
        [...(isRoot ? ["-u", "postgres", "--", join(binDir, "pg_ctl")] : []), "stop", "-D", data, "-m", "immediate"],
        { cwd: dir, stdio: "ignore" },
      );
    running = false;
    rmSync(dir, { recursive: true, force: true });
  };
  // A worker that dies without afterAll still takes its cluster down.
  process.once("exit", stopNow);
  try {
    // --no-sync: initdb does not fsync the files it writes (the cluster is thrown away); the
    // server itself runs with fsync=on.
    await runAsOwner(join(binDir, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], dir);
    let port = 0;
    const startServer = async (): Promise<void> => {
      const options = [
        `-c port=${port}`,
        "-c listen_addresses=127.0.0.1",
        `-c unix_socket_directories='${socketDir}'`,
        "-c fsync=on",
        "-c synchronous_commit=on",
      ].join(" ");
      await runAsOwner(join(binDir, "pg_ctl"), ["start", "-D", data, "-l", log, "-w", "-t", "60", "-o", options], dir);
      running = true;
    };
    for (let attempt = 1; ; attempt += 1) {
      port = await freePort();
      try {
        await startServer();
        break;
      } catch (error) {
        // Another process may have taken the port between freePort and the start.
        if (attempt === 3) throw new Error(`${(error as Error).message}\n${existsSync(log) ? readFileSync(log, "utf8") : ""}`);
      }
    }
    const startMs = Date.now() - started;
    const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
    let databases = 0;
    return {
      startMs,
      async createDatabase(prefix = "test") {
        databases += 1;
        const name = `${prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_")}_${databases}`;
        const admin = new pg.Client({ connectionString: url("postgres") });
        await admin.connect();
        try {
          await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
        } finally {
          await admin.end();
        }
        return url(name);
      },
      async stopServer() {
        await runAsOwner(join(binDir, "pg_ctl"), ["stop", "-D", data, "-m", "fast", "-w"], dir);
        running = false;
      },
      startServer,
      async stop() {
        process.removeListener("exit", stopNow);
        try {
          if (running) await runAsOwner(join(binDir, "pg_ctl"), ["stop", "-D", data, "-m", "immediate", "-w"], dir);
          running = false;
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    process.removeListener("exit", stopNow);
    stopNow();
    throw error;
  }
}
