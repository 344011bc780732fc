#!/usr/bin/env bash
# `npm test`: every gate CI relies on, then the whole vitest suite. Ends with the plain line
# "N passed, N failed" that CI reads.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin

step() { printf '\n== %s\n' "$*"; }

step "typecheck (tsc strict)"
"$bin/tsc" -p tsconfig.json --noEmit

step "buf lint"
"$bin/buf" lint

step "buf format"
"$bin/buf" format --diff --exit-code

step "vendored protos match their packages"
"$bin/tsx" scripts/vendor-protos.ts --check

step "generated code does not drift"
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin/buf" generate --output "$gen"
if ! diff -r src/gen "$gen/src/gen"; then
  echo "src/gen differs from what buf generate produces: run 'npm run generate' and commit src/gen" >&2
  exit 1
fi

step "buf breaking against the previous commit"
bash scripts/check-breaking.sh

step "vitest"
report="$gen/vitest.json"
status=0
"$bin/vitest" run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" || echo "0 passed, 1 failed"
exit "$status"
