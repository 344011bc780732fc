// The layers of src/ and the rules that keep imports pointing downwards. `npm test` runs this
// (scripts/check.sh: `depcruise src`); docs/architecture.md explains the layers in words.
//
// Each directory of src/ is one layer. `layers` names, for each, the layers it may import
// directly; a layer may also import whatever those may import (the table is closed
// transitively below), its own files, and packages. Anything else is an error naming the rule
// `layer-<directory>`. A new directory under src/ must be added here (rule `layer-unknown`).
const layers = {
  // Written by `buf generate` only.
  gen: [],
  // The API's vocabulary: its errors, the logger, health, call profiles. Knows no domain.
  api: ["gen"],
  // Tracing, used by the store and the domains alike.
  telemetry: ["api"],
  // Pure modules (no I/O, no store) that the store and several domains share: lifecycle
  // transitions, budget arithmetic, the audit hash chain, enum names, policy gates, wake-ups.
  model: ["gen"],
  // Operating-system processes: process groups, /proc, executables on PATH.
  process: [],
  // The OperationStore interface and its SQLite and PostgreSQL backends.
  store: ["model", "telemetry", "api"],
  // The domains, lowest first; the edges between them are the ones listed.
  metrics: ["store"],
  governance: ["metrics", "store"],
  sandbox: ["process", "api", "gen"],
  executors: ["sandbox", "governance"],
  workers: ["executors"],
  lifecycle: ["workers"],
  audit: ["metrics"],
  contract: ["audit"],
  // The server's settings: a table of what each domain is configured with.
  config: ["lifecycle"],
  diagnostics: ["config"],
  // A call's context as handlers see it: who called, its audit scope, its raw request.
  call: ["audit", "governance"],
  gateways: ["call", "lifecycle"],
  // The RPC handlers: convert, call the domains, convert back.
  services: ["call", "contract", "diagnostics", "gateways"],
  // The composition root: listeners, interceptors, the table of served services.
  server: ["services"],
  cli: ["server"],
  // The browser console (its own tsconfig, bundled by esbuild): generated clients and pure rules only.
  console: ["model"],
};

function closure(layer, seen = new Set()) {
  for (const below of layers[layer]) {
    if (seen.has(below)) continue;
    seen.add(below);
    closure(below, seen);
  }
  return seen;
}

const layerRules = Object.keys(layers).map((layer) => ({
  name: `layer-${layer}`,
  comment: `src/${layer}/ may import only: ${[...closure(layer)].join(", ") || "packages"} (see .dependency-cruiser.cjs)`,
  severity: "error",
  from: { path: `^src/${layer}/` },
  to: { path: "^src/", pathNot: `^src/(${[layer, ...closure(layer)].join("|")})/` },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: "layer-unknown",
      comment: "every directory of src/ is a layer named in .dependency-cruiser.cjs",
      severity: "error",
      from: { path: "^src/", pathNot: `^src/(${Object.keys(layers).join("|")})/` },
      to: {},
    },
    {
      name: "no-circular",
      comment: "modules that import each other cannot be understood, tested or moved one at a time",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "store-backend-behind-open-store",
      comment: "outside src/store/ the store is the OperationStore interface; only open-store.ts picks a backend",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/store/" },
      to: { path: "^src/store/(sqlite|postgres)/" },
    },
    {
      name: "no-tests-in-src",
      comment: "src/ runs without test/, bench/, scripts/ and examples/",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench|scripts|examples)/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Type-only imports count: a type is as much a dependency of the layer that names it.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};
