#!/usr/bin/env bash
# Fails when generated or vendored files differ from what their generators produce now:
# proto-vendor/ (scripts/vendor-protos.ts) and src/gen/ (buf generate). Writes nothing in the
# work tree: it regenerates into a temporary directory and compares.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"

tsx scripts/vendor-protos.ts --check

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
buf generate --output "$out"
if ! diff -r src/gen "$out/src/gen"; then
  echo "src/gen differs from what buf generate produces: run 'npm run generate' and commit src/gen" >&2
  exit 1
fi
echo "generated code: src/gen and proto-vendor/ are up to date"
