// The first program in a sandbox: it opens the sandbox's only ways out, then execs the
// execution's own program in its place.
//
// The sandbox's network namespace has loopback only. For each way out, socat listens on a
// loopback port inside and passes every connection to a unix socket that the plane's side of
// the sandbox serves (SANDBOX_RUN_DIR, bound read-only): `plane.sock` reaches the plane's API,
// so `AMCTL_SERVER=http://127.0.0.1:PORT` works inside unchanged; `egress.sock`, only when the
// operation was granted egress, reaches the plane's egress proxy (HTTP_PROXY/HTTPS_PROXY).
// The program starts once every bridge listens (the launcher watches /proc/net/tcp), so its
// first call never meets a closed port.
import { SANDBOX_RUN_DIR } from "./bubblewrap-args.js";

export interface Bridge {
  /** Loopback port inside the sandbox. */
  port: number;
  /** Socket file name in SANDBOX_RUN_DIR. */
  socket: string;
}

/** 127.0.0.1:port in /proc/net/tcp's notation. */
function listeningAddress(port: number): string {
  return `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** `sh -c SCRIPT launcher PROGRAM ARGS…`: the argv that runs `program` after the bridges are up. */
export function launcherArgv(socat: string, bridges: readonly Bridge[], program: readonly string[], keepPwd: boolean): string[] {
  const lines = ["set -e"];
  for (const { port, socket } of bridges) {
    lines.push(`${socat} TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:${SANDBOX_RUN_DIR}/${socket} </dev/null >/dev/null 2>&1 3>&- &`);
  }
  // Polled with the shell's own `read` (no process per look): a bridge listens within a few
  // milliseconds, and a sleep between looks would cost more than the looking.
  for (const { port } of bridges) {
    lines.push(
      `n=0; up=; until [ -n "$up" ]; do n=$((n+1)); [ $n -lt 200000 ] || { echo 'amctl sandbox: the plane bridge did not start' >&2; exit 125; }; ` +
        `while read -r _ local _ state _; do [ "$local $state" = "${listeningAddress(port)} 0A" ] && up=1; done < /proc/net/tcp; done`,
    );
  }
  // The shell exports PWD; the program gets exactly the environment it was given.
  lines.push(keepPwd ? 'exec "$@"' : 'unset PWD; exec "$@"');
  return ["/bin/sh", "-c", lines.join("\n"), "amctl-sandbox", ...program];
}
