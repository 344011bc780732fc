// What ends a gateway call before its upstream answers: a revocation of the caller's
// delegation or an ancestor (the attempt's own credential is revoked when the attempt ends:
// cancel, wall clock, budget), and a revocation of the grant the call was allowed under.
// Grants are looked at again after every commit that revokes one (the GrantIndex has already
// forgotten its snapshot by then: it listens to the same commits, and was registered first).
import type { Principal } from "../governance/authority.js";
import type { Authority } from "../governance/authority.js";
import type { GrantIndex } from "../governance/grant-index.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { StoreEvents } from "../store/store.js";

interface GrantWatch {
  profile: string;
  tool: string;
  abort(reason: string): void;
}

export class CallRevocations {
  private readonly grantWatches = new Set<GrantWatch>();

  constructor(
    private readonly authority: Authority,
    private readonly grants: GrantIndex,
    store: StoreEvents,
  ) {
    store.onCommit((events) => {
      if (this.grantWatches.size > 0 && events.some((stored) => stored.operationType === OperationType.TOOL_GRANT_REVOKE)) void this.recheckGrants();
    });
  }

  /**
   * A signal that fires when `principal` loses its authority, or, given a tool, when no grant of
   * it is left in `profile`; its reason says which. Dispose of it when the call ends.
   */
  watch(principal: Principal, grant?: { profile: string; tool: string }): { signal: AbortSignal; dispose: () => void } {
    const controller = new AbortController();
    const revocation = this.authority.revocationSignal(principal);
    const onRevoked = (): void => controller.abort(`${principal.delegation.name} was revoked`);
    revocation.signal.addEventListener("abort", onRevoked, { once: true });
    const watch: GrantWatch | undefined = grant && { ...grant, abort: (reason) => controller.abort(reason) };
    if (watch !== undefined) this.grantWatches.add(watch);
    return {
      signal: controller.signal,
      dispose: () => {
        revocation.signal.removeEventListener("abort", onRevoked);
        revocation.dispose();
        if (watch !== undefined) this.grantWatches.delete(watch);
      },
    };
  }

  private async recheckGrants(): Promise<void> {
    for (const watch of [...this.grantWatches]) {
      // Fail closed: a grant that cannot be read now is taken for revoked.
      const granted = await this.grants.toolGranted(watch.profile, watch.tool).catch(() => false);
      if (!granted) watch.abort(`the grant of ${watch.tool} in ${watch.profile} was revoked`);
    }
  }
}
