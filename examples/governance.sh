#!/usr/bin/env bash
# The whole governance path, as an operator and an agent would walk it:
#   init → a root signed offline → profiles and a model provider binding → a child delegation
#   for an agent (narrow scope, small budget) → a dry run of the policy → the agent grants a
#   tool → the agent runs an execution that asks AuthorizeCall before each call and reports
#   usage → an execution that would overspend is stopped → revocation ends the agent's
#   authority.
#   usage: examples/governance.sh DATA_DIR [BASE_URL]
# The server at BASE_URL must serve DATA_DIR with the default policy bundles (examples/policies:
# `amctl init` copies them to DATA_DIR/policies before the server starts, or serve --policy).
# test/e2e/governance-walkthrough.test.ts runs it.
set -euo pipefail
data_dir=$1
url=${2:-http://127.0.0.1:7070}
here=$(cd "$(dirname "$0")" && pwd)
amctl() { node "$here/../bin/amctl.mjs" "$@"; }
# One field of a JSON document on stdin (`a.b`), printed as JSON unless it is a string.
field() { node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => { const v = process.argv[1].split(".").reduce((o, k) => o[k], JSON.parse(s)); console.log(typeof v === "string" ? v : JSON.stringify(v)); })' "$1"; }
# The credentials go to a temporary directory (AMCTL_EXAMPLE_WORK keeps them in one of yours:
# the test uses them as canaries to grep everything the server wrote for).
work=${AMCTL_EXAMPLE_WORK:-$(mktemp -d)}
[ -n "${AMCTL_EXAMPLE_WORK:-}" ] || trap 'rm -rf "$work"' EXIT
export AMCTL_SERVER=$url

[ -f "$data_dir/operator/operator.pub" ] || amctl init --data-dir "$data_dir"

echo "# 1. A root credential, signed offline with the operator key"
amctl delegation root --data-dir "$data_dir" --subject ops --may-delegate --ttl 1h > "$work/root.jwt"
root() { amctl --token-file "$work/root.jwt" "$@"; }
root policy list

echo "# 2. A personal profile for the agent, and a local model provider bound in its own profile"
root submit --profile-create dev --profile-type personal --wait > /dev/null
root submit --profile-create local-models --profile-type local_model_provider --wait > /dev/null
root submit --profile local-models --bind-provider ollama --endpoint http://127.0.0.1:11434 --wait > /dev/null
echo "profiles/dev, profiles/local-models (ollama bound)"

echo "# 3. A child delegation for agent-7: executions and tool grants in profiles/dev, git and ollama only, a small budget"
root delegation issue --subject agent-7 --ttl 30m \
  --operation-type agent_machine.execution.start --operation-type agent_machine.tool_grant.apply \
  --profile profiles/dev --tool git --provider ollama \
  --budget modelCalls=10 --budget tokens=5000 --budget connectorCalls=10 --budget cpuGpuComputeSeconds=600 \
  --budget wallClockSeconds=1200 --budget localDiskBytes=1073741824 --budget sandboxMemoryBytes=1073741824 --budget agentConcurrency=1 \
  > "$work/agent.jwt"
agent() { amctl --token-file "$work/agent.jwt" "$@"; }
agent whoami

echo "# 4. Would it be allowed? (dry runs: nothing is stored)"
agent policy check --profile dev --grant-tool git
if agent policy check --profile dev --grant-tool nmap; then
  echo "unexpected: the agent's delegation allows nmap" >&2
  exit 1
fi
# The root may grant any tool, but the personal policy bundle does not allow nmap.
if root policy check --profile dev --grant-tool nmap; then
  echo "unexpected: the personal policy allows nmap" >&2
  exit 1
fi

echo "# 5. The agent grants itself git in its profile (the toolGrant gate decides)"
agent submit --profile dev --grant-tool git --wait

echo "# 6. The agent runs an execution that asks before each call (examples/agent/calls.sh)"
budget=(--budget modelCalls=3 --budget tokens=2000 --budget connectorCalls=3 --budget cpuGpuComputeSeconds=60 --budget wallClockSeconds=120 --budget localDiskBytes=104857600 --budget sandboxMemoryBytes=536870912)
agent submit --profile dev "${budget[@]}" --wait --exec -- bash "$here/agent/calls.sh" 500 > "$work/run.txt"
grep -E 'progress|complete' "$work/run.txt" || true
operation=$(head -n 1 "$work/run.txt" | grep -o 'operations/[A-Za-z0-9]*' | head -n 1)
echo "usage of $operation:"
agent get "$operation" --json | field operation.usage

echo "# 7. An execution that asks for more tokens than its budget is stopped: failed, budget_exhausted"
if agent submit --profile dev "${budget[@]}" --wait --exec -- bash "$here/agent/calls.sh" 5000 > "$work/over.txt"; then
  echo "unexpected: the overspending execution completed" >&2
  exit 1
fi
over=$(head -n 1 "$work/over.txt" | grep -o 'operations/[A-Za-z0-9]*' | head -n 1)
echo "stop cause of $over:"
agent get "$over" --json | field operation.stopCause

echo "# 8. Revoke the agent's delegation: its credential stops working at once"
child=$(agent whoami --json | field delegation.name)
root delegation revoke "$child" --reason "agent retired"
if agent whoami 2> /dev/null; then
  echo "unexpected: a revoked credential still works" >&2
  exit 1
fi
echo "# done"
