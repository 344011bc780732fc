// A task a remote worker runs must not outlive the worker: if the worker is killed, the
// server retries the task elsewhere, and the first run must not go on beside the retry.
// `setpriv --pdeathsig KILL` (util-linux) asks the kernel to kill the group leader when its
// parent dies (prctl PR_SET_PDEATHSIG, which Node cannot set itself), then execs the program
// in place, so the leader's pid and process group are the program's. Its descendants are
// not covered; the worker also stops the groups it left behind when it starts again.
import { resolveExecutable } from "../process/resolve-executable.js";

const setpriv = ((): string | undefined => {
  try {
    return resolveExecutable("setpriv", "/usr/bin:/bin:/usr/sbin:/sbin");
  } catch {
    return undefined;
  }
})();

/** The command line that runs `program` killed with its parent, or undefined where setpriv is missing. */
export function killedWithParent(program: string, args: readonly string[]): { file: string; args: string[] } | undefined {
  return setpriv === undefined ? undefined : { file: setpriv, args: ["--pdeathsig", "KILL", "--", program, ...args] };
}
