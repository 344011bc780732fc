#!/usr/bin/env bash
# `npm test`: every gate CI relies on, then the whole vitest suite. Ends with the plain line
# "N passed, N failed" that CI reads.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
# buf runs protoc-gen-es from PATH; `npm test` sets this up, a direct `bash scripts/check.sh` must too.
export PATH="$PWD/node_modules/.bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "typecheck (tsc strict)"
"$bin/tsc" -p tsconfig.json --noEmit
"$bin/tsc" -p src/console/tsconfig.json --noEmit

step "layers import downwards only (dependency-cruiser, rules in .dependency-cruiser.cjs)"
"$bin/depcruise" src --config .dependency-cruiser.cjs --output-type err

step "biome (TypeScript format and lint; fix with: npm run format)"
"$bin/biome" ci --colors=off .

step "buf lint"
"$bin/buf" lint

step "buf format"
"$bin/buf" format --diff --exit-code

step "generated code and vendored protos do not drift"
bash scripts/check-generated.sh

step "buf breaking against the previous commit"
bash scripts/check-breaking.sh

step "vitest"
report_dir=$(mktemp -d)
trap 'rm -rf "$report_dir"' EXIT
report="$report_dir/vitest.json"
status=0
"$bin/vitest" run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" || echo "0 passed, 1 failed"
exit "$status"
