// A few sandboxes started ahead of need, each a bwrap process already in its own fresh cgroups
// and waiting for its options (waiting-sandbox.ts), so an attempt skips the two slow steps of
// a start: the fork from the server's large process and the entry into the cgroups (an RCU
// grace period in the kernel, 4 to 20 ms here). An attempt takes one; the pool is filled
// again once that attempt's sandbox has started, so the new spawn does not delay it.
//
// A spare has no execution's data: nothing of an attempt reaches it before it is taken. Idle,
// it does not keep the server's event loop alive; one that dies idle is dropped with its
// groups; and a server that dies takes its spares with it (they read no options and exit).
import type { Socket } from "node:net";
import type { WaitingSandbox } from "./waiting-sandbox.js";

export class SpareSandboxes {
  private readonly ready: WaitingSandbox[] = [];
  private pending = 0;
  private closed = false;
  /** A spare's listener that drops it if it dies while it waits; removed when it is taken. */
  private readonly onIdleExit = new Map<WaitingSandbox, () => void>();

  constructor(
    private readonly start: () => Promise<WaitingSandbox>,
    private readonly size: number,
  ) {}

  /** A spare still waiting, now the caller's (its events keep the loop alive again), or undefined. */
  take(): WaitingSandbox | undefined {
    for (let spare = this.ready.shift(); spare !== undefined; spare = this.ready.shift()) {
      const listener = this.onIdleExit.get(spare);
      this.onIdleExit.delete(spare);
      if (listener !== undefined) {
        spare.child.off("exit", listener);
        spare.child.off("error", listener);
      }
      if (spare.child.exitCode === null && spare.child.signalCode === null) {
        setReferenced(spare, true);
        return spare;
      }
      spare.discard();
    }
    return undefined;
  }

  /** How many spares wait to be taken. */
  waiting(): number {
    return this.ready.length;
  }

  /** Starts spares until `size` of them wait or are on their way; a failed start is retried at the next fill. */
  fill(): void {
    while (!this.closed && this.ready.length + this.pending < this.size) {
      this.pending += 1;
      this.start().then(
        (spare) => {
          this.pending -= 1;
          if (this.closed) {
            spare.discard();
            return;
          }
          setReferenced(spare, false);
          const drop = (): void => {
            this.onIdleExit.delete(spare);
            const index = this.ready.indexOf(spare);
            if (index >= 0) this.ready.splice(index, 1);
            spare.discard();
          };
          this.onIdleExit.set(spare, drop);
          spare.child.once("exit", drop);
          spare.child.once("error", drop);
          this.ready.push(spare);
        },
        () => {
          this.pending -= 1;
        },
      );
    }
  }

  /** Kills the spares; fills after this start none. */
  close(): void {
    this.closed = true;
    for (const spare of this.ready.splice(0)) spare.discard();
    this.onIdleExit.clear();
  }
}

function setReferenced({ child }: WaitingSandbox, referenced: boolean): void {
  if (referenced) child.ref();
  else child.unref();
  for (const pipe of child.stdio) {
    const socket = pipe as Socket | null;
    if (referenced) socket?.ref();
    else socket?.unref();
  }
}
