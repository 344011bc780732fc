// Executes agent_machine.diagnostics.export_redacted: collects what the bundle is made of,
// runs it through the allowlists and the detectors, packs it, scans the packed bytes, and only
// then writes the one archive file. A final scan that finds anything fails the operation with
// cause `redaction_failed` and leaves no file. The artifactAccess gate ran at admission.
import { create } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { StopCauseSchema, StopReason, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { Attempt, Executor, Outcome } from "../executors/executor.js";
import type { AllowlistTally } from "./allowlist.js";
import { assembleFiles } from "./assemble.js";
import { bundlePath, removeBundle, writeBundle } from "./bundle-file.js";
import { collect, type DiagnosticsContext } from "./collect.js";
import { defaultDetectors, secretEnvValues, type KnownSecrets } from "./detectors.js";
import { describeFindings, exportBundle, type Pipeline } from "./export-bundle.js";

export interface DiagnosticsExecutorDeps extends DiagnosticsContext {
  dataDir: string;
  /**
   * Key ids (`kid`) of the keys whose credentials the server accepts or has accepted since it
   * started (its trust anchors' and its own), read when an export runs: anchors change at run time.
   */
  credentialKeyIds(): readonly string[];
  /** The secrets the server holds for itself (private keys, MAC keys), read when an export runs. */
  localSecrets(): Promise<readonly string[]>;
  /**
   * The detectors of both passes for the secrets known at export time. Default: the full
   * pipeline (detectors.ts) for both. Tests narrow the first pass to prove the final scan.
   */
  pipeline?: (secrets: KnownSecrets) => Pipeline;
}

/** The environment values of executions and container runs: secret, whatever they look like. */
function envValuesOf(operations: readonly Operation[]): string[] {
  return operations.flatMap((operation) => {
    const spec = operation.spec?.kind;
    return spec?.case === "executionStart" || spec?.case === "containerRun" ? Object.values(spec.value.env) : [];
  });
}

function failed(reason: StopReason, message: string): Outcome {
  return { kind: "failed", cause: create(StopCauseSchema, { reason, message }), retryable: false };
}

export class DiagnosticsExecutor implements Executor {
  constructor(private readonly deps: DiagnosticsExecutorDeps) {}

  async run({ operation, signal, progress }: Attempt): Promise<Outcome> {
    const spec = operation.spec?.kind;
    if (spec?.case !== "diagnosticsExport") throw new Error(`DiagnosticsExecutor cannot run ${spec?.case ?? "an empty spec"}`);
    const path = bundlePath(this.deps.dataDir, operation.name);
    removeBundle(path); // nothing of an earlier attempt may stand for this one
    const sources = await collect(this.deps, operation, spec.value.recentOperations);
    progress(`collected ${sources.recentOperations.length} operations and ${sources.events.length} events`, 40);
    const secrets: KnownSecrets = {
      credentialKeyIds: this.deps.credentialKeyIds(),
      localSecrets: await this.deps.localSecrets(),
      envSecrets: [...envValuesOf(sources.recentOperations), ...secretEnvValues(process.env)],
    };
    const full = defaultDetectors(secrets);
    const pipeline = this.deps.pipeline?.(secrets) ?? { detectors: full, finalScanDetectors: full };
    const allowlist: AllowlistTally = { redactedFields: 0 };
    const files = assembleFiles(sources, allowlist);
    const result = await exportBundle(
      files,
      { operation: operation.name, profile: operation.profile, exportTime: sources.exportTime, serverVersion: sources.server.version, allowlist },
      pipeline,
    );
    if (result.kind === "leak") return failed(StopReason.REDACTION_FAILED, describeFindings(result.findings));
    if (signal.aborted) return { kind: "cancelled" };
    writeBundle(path, result.archive);
    return {
      kind: "completed",
      message: `exported ${sources.recentOperations.length} operations and ${sources.events.length} events (${result.archive.length} bytes)`,
      artifact: create(ArtifactSchema, {
        kind: {
          case: "agentMachineDiagnosticBundle",
          value: {
            operationType: OperationType.DIAGNOSTICS_EXPORT_REDACTED,
            credentialsIncluded: false,
            tokensIncluded: false,
            localSecretsIncluded: false,
            sensitivePromptsIncluded: false,
            sha256: result.sha256,
            sizeBytes: BigInt(result.archive.length),
          },
        },
      }),
    };
  }
}
