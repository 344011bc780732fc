#!/usr/bin/env bash
# Calls a running server the ways a user would: plain curl (HTTP/1.1 JSON and HTTP/2 gRPC-Web
# are both on the one port) and `buf curl` over gRPC using server reflection, no local protos.
#   usage: AMCTL_TOKEN=... examples/calls.sh [BASE_URL]     (default http://127.0.0.1:7070)
# AMCTL_TOKEN must hold a credential (see `amctl delegation root`, or the README): the calls of
# ContractService send it as `authorization: Bearer $AMCTL_TOKEN`; health checking and
# reflection need none.
# test/e2e/examples.test.ts runs this script against a real server.
set -euo pipefail
: "${AMCTL_TOKEN:?must hold a credential (see amctl delegation root)}"
url=${1:-http://127.0.0.1:7070}
here=$(cd "$(dirname "$0")" && pwd)
buf="$here/../node_modules/.bin/buf"

echo "# Health check, Connect JSON over HTTP/1.1"
curl -sS --fail-with-body -X POST -H 'content-type: application/json' -d '{}' \
  "$url/grpc.health.v1.Health/Check"
echo

# ValidateContract takes the document as a JSON string in the `json` field.
validate_file() {
  local body
  body=$(node -e 'process.stdout.write(JSON.stringify({ json: require("node:fs").readFileSync(process.argv[1], "utf8") }))' "$1")
  curl -sS --fail-with-body -X POST -H 'content-type: application/json' -H "authorization: Bearer $AMCTL_TOKEN" -d "$body" \
    "$url/agentmachine.v1.ContractService/ValidateContract"
  echo
}

echo "# Validate the upstream example contract"
validate_file "$here/contracts/local-execution.json"

echo "# Validate a broken contract: a normal answer with violations, not an error"
validate_file "$here/contracts/broken/ambient-authority.json"

echo "# A malformed request is InvalidArgument (HTTP 400) naming the field"
curl -sS -X POST -H 'content-type: application/json' -H "authorization: Bearer $AMCTL_TOKEN" -d '{}' \
  "$url/agentmachine.v1.ContractService/ValidateContract" || true
echo

echo "# The same over HTTP/2 (Connect protocol, prior knowledge)"
curl -sS --fail-with-body --http2-prior-knowledge -X POST -H 'content-type: application/json' -d '{}' \
  "$url/grpc.health.v1.Health/Check"
echo

echo "# buf curl over gRPC, methods discovered through server reflection"
"$buf" curl --http2-prior-knowledge --list-methods "$url"
"$buf" curl --http2-prior-knowledge --protocol grpc -H "authorization: Bearer $AMCTL_TOKEN" \
  "$url/agentmachine.v1.ContractService/GetContract" \
  | node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(JSON.parse(s).contract.id))'

echo "# buf curl streaming: the first health status of a Watch"
"$buf" curl --http2-prior-knowledge --protocol grpc --timeout 1s -d '{"service": ""}' \
  "$url/grpc.health.v1.Health/Watch" 2>/dev/null | head -n 3 || true
