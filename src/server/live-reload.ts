// What a running server reads again, so that `amctl init`, a rotated operator key or an edited
// policy bundle take effect without a restart: the trust anchor files and the policy directory,
// each when a watch says it changed, and both on SIGHUP (`amctl serve` calls `reload`), which
// does what a restart would. (A credential naming an unknown key id makes the anchors be read
// again too: src/governance/trust-anchors.ts.)
import type { PolicyDirectory } from "../governance/policy/policy-directory.js";
import type { TrustAnchors } from "../governance/trust-anchors.js";
import type { Logger } from "../api/logger.js";
import { watchPaths } from "./path-watch.js";

export interface LiveReload {
  /** Reads the anchors and the whole policy directory again; `trigger` (e.g. "SIGHUP") is logged. Never rejects. */
  reload(trigger: string): Promise<void>;
  close(): void;
}

export function liveReload(options: { anchors: TrustAnchors; anchorFiles: readonly string[]; policy: PolicyDirectory; log: Logger }): LiveReload {
  const { anchors, policy, log } = options;
  const watches = [
    watchPaths(
      options.anchorFiles.map((path) => ({ path, kind: "file" as const })),
      () => void anchors.reload("watch"),
      log,
    ),
    watchPaths([{ path: policy.dir, kind: "directory" }], () => void policy.reload("watch", "changed"), log),
  ];
  return {
    async reload(trigger) {
      await Promise.all([anchors.reload(trigger), policy.reload(trigger, "all")]);
    },
    close() {
      for (const watch of watches) watch.close();
    },
  };
}
