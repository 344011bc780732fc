// Policy decisions: the bundles in force (one per profile type, versioned in the store) and
// how a gate is decided from them. A gate allows only if an allow rule matches and no deny
// rule does; no matching allow, an evaluation error or a missing bundle is a denial.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PolicyDecisionSchema, type PolicyDecision } from "../../gen/agentmachine/v1/operation_pb.js";
import { PolicyBundleSchema, type PolicyBundle, type PolicyInput } from "../../gen/agentmachine/v1/policy_pb.js";
import type { ProfileType } from "../../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../../model/mapping.js";
import type { AuditDraft } from "../../model/audit-chain.js";
import type { KeyedCreate, RequestKey, StoreBundles } from "../../store/store.js";
import { invalidField } from "../../api/errors.js";
import type { Logger } from "../../api/logger.js";
import type { PlaneMetrics } from "../../metrics/plane-metrics.js";
import { inChildSpan } from "../../telemetry/tracer.js";
import { BundleError, compileBundle, type CompiledBundle } from "./policy-bundle.js";
import { policyGates, type Gate } from "../../model/policy-gates.js";

/**
 * Decides `gate` for `input`, in a span of its own (`policy.evaluate`, which says by which rule)
 * when it is part of traced work.
 */
export function decideGate(bundle: CompiledBundle | undefined, gate: Gate, input: PolicyInput): PolicyDecision {
  return inChildSpan("policy.evaluate", { "agentmachine.policy.gate": gate }, (span) => {
    const decision = evaluateGate(bundle, gate, input);
    span.setAttributes({
      "agentmachine.policy.rule": decision.rule,
      "agentmachine.policy.allowed": decision.allowed,
      "agentmachine.policy.bundle_digest": decision.bundleDigest,
    });
    return decision;
  });
}

function evaluateGate(bundle: CompiledBundle | undefined, gate: Gate, input: PolicyInput): PolicyDecision {
  const decision = (allowed: boolean, rule: string, reason: string) =>
    create(PolicyDecisionSchema, { gate: policyGates.get(gate), rule, bundleDigest: bundle?.digest ?? "", allowed, reason });
  if (bundle === undefined) {
    return decision(
      false,
      "missing-bundle",
      `no policy bundle governs ${input.profileType} profiles: put one in the server's policy directory (applied as it changes, no restart needed) or apply one with amctl policy apply`,
    );
  }
  let allowedBy: { id: string; description: string } | undefined;
  for (const rule of bundle.rules) {
    if (rule.gate !== gate) continue;
    const outcome = rule.evaluate(input);
    if ("error" in outcome) return decision(false, rule.id, `evaluation error: ${outcome.error}`);
    if (!outcome.value) continue;
    if (rule.effect === "deny") return decision(false, rule.id, rule.description || "a deny rule matched");
    allowedBy ??= rule;
  }
  if (allowedBy === undefined) return decision(false, "no-matching-allow", `no allow rule of the ${gate} gate matched`);
  return decision(true, allowedBy.id, allowedBy.description || "an allow rule matched");
}

export class PolicyEngine {
  private readonly bundles = new Map<ProfileType, CompiledBundle>();
  /** Digests of stored bundles that did not compile, so a reload does not log them again. */
  private readonly refused = new Set<string>();

  constructor(
    private readonly store: StoreBundles,
    private readonly log: Logger,
    /** Set when the server keeps metrics: every decision is counted. */
    private readonly metrics?: Pick<PlaneMetrics, "policyDecided">,
  ) {}

  /**
   * Loads the bundles in force from the store (again: on a shared store, another replica may
   * have applied one). One that no longer compiles is left out (its gates deny) and logged.
   */
  async load(): Promise<void> {
    for (const stored of await this.store.listPolicyBundles()) {
      if (this.bundles.get(stored.profileType)?.digest === stored.digest || this.refused.has(stored.digest)) continue;
      try {
        this.bundles.set(stored.profileType, compileBundle(stored.source));
      } catch (error) {
        this.refused.add(stored.digest);
        this.log.error({ bundle: stored.name, problem: (error as Error).message }, "a stored policy bundle does not compile; its gates deny everything");
      }
    }
  }

  /**
   * Puts a compiled bundle (read from a policy directory: src/governance/policy/policy-directory.ts)
   * in force, stored as the next version of its profile type; unless the bundle in force has the
   * same digest, so that reading unchanged files again stores nothing. Returns what it stored.
   */
  async applyCompiled(bundle: CompiledBundle, source: string, appliedBy: string): Promise<PolicyBundle | undefined> {
    if (this.bundles.get(bundle.profileType)?.digest === bundle.digest) return undefined;
    const stored = await this.store.putPolicyBundle(this.record(bundle, source, appliedBy));
    this.bundles.set(bundle.profileType, bundle);
    // Without a key, a put always creates.
    return stored.kind === "created" ? stored.value : undefined;
  }

  /**
   * Compiles and applies a bundle for `profileType`; InvalidArgument naming the problem if it
   * cannot be used. `audit`: the command's record, committed with the bundle. With `key`, a key
   * recorded already changes nothing, here either: the bundle in force stays.
   */
  async apply(profileType: ProfileType, source: string, appliedBy: string, audit?: AuditDraft, key?: RequestKey): Promise<KeyedCreate<PolicyBundle>> {
    let bundle: CompiledBundle;
    try {
      bundle = compileBundle(source);
    } catch (error) {
      if (error instanceof BundleError) throw invalidField("source", error.message);
      throw error;
    }
    if (bundle.profileType !== profileType) {
      throw invalidField("source", `profileType: the bundle governs ${profileTypeNames.get(bundle.profileType)}, not ${profileTypeNames.get(profileType)}`);
    }
    const stored = await this.store.putPolicyBundle(this.record(bundle, source, appliedBy), audit, key);
    if (stored.kind === "created") this.bundles.set(profileType, bundle);
    return stored;
  }

  /** Decides each gate for `input` (whose `gate` field is set per gate), in order. */
  decide(profileType: ProfileType, gatesToRun: readonly Gate[], input: PolicyInput): PolicyDecision[] {
    const bundle = this.bundles.get(profileType);
    const decisions = gatesToRun.map((gate) => decideGate(bundle, gate, { ...input, gate }));
    this.metrics?.policyDecided(decisions);
    return decisions;
  }

  private record(bundle: CompiledBundle, source: string, appliedBy: string): PolicyBundle {
    return create(PolicyBundleSchema, {
      profileType: bundle.profileType,
      digest: bundle.digest,
      source,
      appliedBy,
      applyTime: timestampFromDate(new Date()),
    });
  }
}
