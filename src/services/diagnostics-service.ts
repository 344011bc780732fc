// agentmachine.v1.DiagnosticsService: streams a completed export's bundle, authorized like a
// read (the caller must see the operation's profile, else it is NotFound).
import { existsSync } from "node:fs";
import { open } from "node:fs/promises";
import type { ServiceImpl } from "@connectrpc/connect";
import type { DiagnosticsService } from "../gen/agentmachine/v1/diagnostics_service_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { bundlePath } from "../diagnostics/bundle-file.js";
import { bundleCorrupt, bundleNotHere, bundleNotReady, notADiagnosticsExport } from "../diagnostics/errors.js";
import { visibleOperation } from "../lifecycle/visible-operation.js";
import { principalOf } from "../call/principal.js";
import type { StoreOperations } from "../store/store.js";
import { sha256OfFile, verifiedChunks } from "./chunked-download.js";

export interface DiagnosticsServiceDeps {
  store: StoreOperations;
  dataDir: string;
}

export function diagnosticsService({ store, dataDir }: DiagnosticsServiceDeps): ServiceImpl<typeof DiagnosticsService> {
  return {
    async *downloadDiagnostics({ operation: name }, context) {
      const operation = await visibleOperation(store, principalOf(context), name);
      if (operation.type !== OperationType.DIAGNOSTICS_EXPORT_REDACTED) throw notADiagnosticsExport(name);
      const artifact = operation.artifact?.kind.case === "agentMachineDiagnosticBundle" ? operation.artifact.kind.value : undefined;
      if (operation.state !== TaskState.COMPLETED || artifact === undefined) throw bundleNotReady(name, operation.state);
      const path = bundlePath(dataDir, name);
      if (!existsSync(path)) throw bundleNotHere(name);
      const file = await open(path);
      try {
        // Checked before the first byte goes out, and again over the bytes sent.
        if ((await sha256OfFile(file)) !== artifact.sha256) throw bundleCorrupt(name);
        for await (const chunk of verifiedChunks(file, artifact.sha256, () => bundleCorrupt(name))) yield { chunk };
      } finally {
        await file.close();
      }
    },
  };
}
