// agentmachine.v1.DiagnosticsService: streams a completed export's bundle, authorized like a
// read (the caller must see the operation's profile, else it is NotFound).
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import type { ServiceImpl } from "@connectrpc/connect";
import { DiagnosticsService } from "../gen/agentmachine/v1/diagnostics_service_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { bundlePath } from "../diagnostics/bundle-file.js";
import { bundleCorrupt, bundleNotHere, bundleNotReady, notADiagnosticsExport } from "../diagnostics/errors.js";
import { visibleOperation } from "../lifecycle/visible-operation.js";
import { principalOf } from "../call/principal.js";
import type { OperationStore } from "../store/store.js";

export const DOWNLOAD_CHUNK_BYTES = 64 * 1024;

export interface DiagnosticsServiceDeps {
  store: OperationStore;
  dataDir: string;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
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
      // Checked before the first byte goes out, and again over the bytes sent.
      if ((await sha256OfFile(path)) !== artifact.sha256) throw bundleCorrupt(name);
      const sent = createHash("sha256");
      for await (const chunk of createReadStream(path, { highWaterMark: DOWNLOAD_CHUNK_BYTES })) {
        sent.update(chunk as Buffer);
        yield { chunk: chunk as Buffer };
      }
      if (sent.digest("hex") !== artifact.sha256) throw bundleCorrupt(name);
    },
  };
}
