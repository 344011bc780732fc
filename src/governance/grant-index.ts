// Which tools are granted in which profile, and where each model provider is bound: what the
// profile rules need to decide a runtime call. Read from the store (completed grant and binding
// operations) and kept until a commit touches a grant, a revocation or a binding — the store
// tells every listener after each commit, before the writer is answered, so a revoked grant is
// never used once its revocation has completed.
import type { ModelProviderBindSpec, Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState, type ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import type { StoreEvents, StoreOperations } from "../store/store.js";
import { allows } from "./attenuation.js";

const relevant = new Set([OperationType.TOOL_GRANT_APPLY, OperationType.TOOL_GRANT_REVOKE, OperationType.MODEL_PROVIDER_BIND]);

// What lies beyond this many grants or bindings is not seen: calls needing it are denied
// (fail closed). Far beyond what one machine's profiles hold.
const SCAN_LIMIT = 100_000;

interface Snapshot {
  /** Profile → the tools of its applied, unrevoked grants (a tool may be a pattern, `files/*`: attenuation.ts). */
  grants: Map<string, string[]>;
  /** Provider → the types of the provider profiles it is bound in. */
  bindings: Map<string, Set<ProfileType>>;
  /** Provider → its last completed binding's spec (endpoint, key reference, wire format, models). */
  specs: Map<string, ModelProviderBindSpec>;
}

export class GrantIndex {
  private snapshot: Promise<Snapshot> | undefined;

  constructor(private readonly store: StoreOperations & StoreEvents) {
    store.onCommit((events) => {
      if (events.some((stored) => relevant.has(stored.operationType))) this.snapshot = undefined;
    });
  }

  async toolGranted(profile: string, tool: string): Promise<boolean> {
    return allows((await this.current()).grants.get(profile) ?? [], tool);
  }

  /** The types of the provider profiles `provider` is bound in (empty when it is bound nowhere). */
  async providerProfileTypes(provider: string): Promise<ProfileType[]> {
    return [...((await this.current()).bindings.get(provider) ?? [])];
  }

  /** Every bound provider's newest binding, for the model gateway's routing. */
  async providerBindings(): Promise<ModelProviderBindSpec[]> {
    return [...(await this.current()).specs.values()];
  }

  private current(): Promise<Snapshot> {
    const loading = (this.snapshot ??= this.load());
    // A failed read is not kept: the next call tries again.
    loading.catch(() => {
      if (this.snapshot === loading) this.snapshot = undefined;
    });
    return loading;
  }

  private async load(): Promise<Snapshot> {
    const completed = (type: OperationType): Promise<Operation[]> =>
      this.store.listOperations({ types: [type], states: [TaskState.COMPLETED], limit: SCAN_LIMIT });
    const [grantOps, bindingOps] = await Promise.all([completed(OperationType.TOOL_GRANT_APPLY), completed(OperationType.MODEL_PROVIDER_BIND)]);
    const grants = new Map<string, string[]>();
    for (const grant of grantOps) {
      const artifact = grant.artifact?.kind;
      if (artifact?.case === "toolGrantRecord" && artifact.value.revokeCommandRef === "") {
        grants.set(grant.profile, [...(grants.get(grant.profile) ?? []), artifact.value.tool]);
      }
    }
    const bindings = new Map<string, Set<ProfileType>>();
    const specs = new Map<string, ModelProviderBindSpec>();
    for (const binding of [...bindingOps].sort((a, b) => Number(a.lastSequence - b.lastSequence))) {
      const artifact = binding.artifact?.kind;
      if (artifact?.case !== "modelProviderBinding") continue;
      const types = bindings.get(artifact.value.provider) ?? new Set<ProfileType>();
      types.add(artifact.value.profileType);
      bindings.set(artifact.value.provider, types);
      if (binding.spec?.kind.case === "modelProviderBind") specs.set(artifact.value.provider, binding.spec.kind.value);
    }
    return { grants, bindings, specs };
  }
}
