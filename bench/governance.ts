// The governance benchmark: what authorization and the policy cost a call and a submit, against
// the baseline grpc.health.v1.Health/Check, over gRPC, on one server with the default policy
// bundles (examples/policies). Subjects, each in A/B runs against Health:
//
//   evaluate        PolicyService/EvaluatePolicy of a tool call in a personal profile where the
//                   tool is granted (no write), at 1 and 16 clients
//   authorize       RuntimeService/AuthorizeCall of the same call by a running execution with its
//                   own credential (charges its budget in a durable commit), at 1 and 16 clients
//   submit-profile  SubmitOperation of profile.create (no policy gate), at 16 clients
//   submit          SubmitOperation of tool_grant.apply (toolGrant gate, CEL), at 16 clients
//
// Goal: EvaluatePolicy p50 ≤ 1.2 × Health p50 with one client, where latency is the call's own
// cost rather than queueing behind other clients.
import { fixed, type SectionReport } from "./format.js";
import { cancelExecution, startExecution } from "./executions.js";
import { cellsPreamble, errorCount, formatCells, idleLatencyNotes, methodLabel, runCell, type CellResult, type CellSpec } from "./load.js";
import type { BenchMethod } from "./load-worker.js";
import { withServer } from "./processes.js";
import { BENCH_TOOL, createBenchProfile, grantBenchTool, operationsClient } from "./records.js";
import type { Settings } from "./settings.js";

const PROTOCOL = "grpc";
const CALL_CLIENTS = [1, 16];
const SUBMIT_CLIENTS = 16;
const GOAL = { subject: "evaluate", clients: 1, p50Ratio: 1.2 } as const;
/** The calls' profile: the tool granted, and the execution that asks AuthorizeCall. */
const CALL_PROFILE = "bench";
/** The grant submits' own profile, so the grants they pile up never lengthen the calls' grant scan. */
const GRANT_PROFILE = "bench-grants";

const subjects: [BenchMethod, string][] = [
  [
    "evaluate",
    `${methodLabel.evaluate}, subject call = tool ${BENCH_TOOL} in profiles/${CALL_PROFILE} (personal, ${BENCH_TOOL} granted): ` +
      "credential, scope, profile rule tool-use-needs-grant-in-profile (scans the profile's grants), CEL gate toolGrant; writes nothing",
  ],
  [
    "authorize",
    `${methodLabel.authorize} of the same call, with the credential of a running execution in profiles/${CALL_PROFILE}: ` +
      "the same checks, then one connector call charged to its budget in a durable commit",
  ],
  ["submit-profile", `${methodLabel["submit-profile"]} of profile.create, a new personal profile each call (no policy gate); durable`],
  ["submit", `${methodLabel.submit} of tool_grant.apply ${BENCH_TOOL} in profiles/${GRANT_PROFILE} (personal; CEL gate toolGrant); durable`],
];

export async function governanceBenchmark(settings: Settings): Promise<SectionReport> {
  const cells: CellResult[] = [];
  await withServer("governance", async (server) => {
    const client = operationsClient(server);
    const { profile } = await createBenchProfile(client, CALL_PROFILE);
    await grantBenchTool(client, profile);
    const { profile: grantProfile } = await createBenchProfile(client, GRANT_PROFILE);
    const execution = await startExecution(client, server, profile);
    const base = { protocol: PROTOCOL, baseline: "health" } as const;
    const specs: CellSpec[] = [
      ...CALL_CLIENTS.map((clients) => ({ ...base, clients, subject: "evaluate" as const, workerArgs: ["--profile", profile] })),
      ...CALL_CLIENTS.map((clients) => ({
        ...base,
        clients,
        subject: "authorize" as const,
        workerArgs: ["--operation", execution.name],
        token: execution.token,
      })),
      { ...base, clients: SUBMIT_CLIENTS, subject: "submit-profile" },
      { ...base, clients: SUBMIT_CLIENTS, subject: "submit", workerArgs: ["--profile", grantProfile] },
    ];
    for (const spec of specs) cells.push(await runCell(server, spec, settings, `[governance ${cells.length + 1}/${specs.length}]`));
    // Only on success: after a failure, stopping the server stops the execution too.
    await cancelExecution(client, execution);
  });
  const goalCell = cells.find((cell) => cell.subject.kind === GOAL.subject && cell.clients === GOAL.clients);
  const goalValue = goalCell?.ratios.p50 ?? NaN;
  const table = formatCells(cells, { title: "subject", of: (cell) => cell.subject.kind });
  const errors = errorCount(cells);
  return {
    name: "governance",
    lines: [
      ...cellsPreamble(
        settings,
        "health",
        subjects.map(([kind, description]) => `${kind.padEnd(14)}  ${description}`),
      ),
      "",
      table,
      "",
      ...cells.map((cell) => {
        const goal = cell === goalCell ? ` (goal ≤ ${fixed(GOAL.p50Ratio)})` : "";
        return `${cell.subject.kind}/health at ${cell.clients} client${cell.clients === 1 ? "" : "s"}: throughput ${fixed(cell.ratios.throughput)}, p50 ${fixed(cell.ratios.p50)}${goal}, p99 ${fixed(cell.ratios.p99)}`;
      }),
      ...idleLatencyNotes(cells),
      ...(errors > 0 ? [`WARNING: ${errors} calls failed; see errorCodes in the results`] : []),
    ],
    data: {
      baseline: methodLabel.health,
      subjects: Object.fromEntries(subjects),
      protocol: PROTOCOL,
      policy: "examples/policies",
      cells,
      goal: { ...GOAL, ratio: goalValue, met: Number.isFinite(goalValue) ? goalValue <= GOAL.p50Ratio : null },
      table,
    },
  };
}
