#!/usr/bin/env bash
# The model gateway end to end: bind a provider (its key stays with the server), run an
# unmodified agent (agent.mjs: plain SDK calls) as a sandboxed execution, and see its model calls
# charged and audited.
#   usage: AMCTL_TOKEN=... AMCTL_PROVIDER_DEMO_KEY=... (in the server's environment)
#          examples/model-gateway/walkthrough.sh SERVER_URL PROVIDER_URL
# PROVIDER_URL serves the OpenAI API under /v1 and Anthropic's under /v1/messages (the test runs
# a local stand-in; with the real ones, bind each with its own endpoint and key reference).
# test/e2e/model-gateway.test.ts runs this script against a real server.
set -euo pipefail
: "${AMCTL_TOKEN:?must hold a credential (see amctl delegation root)}"
url=${1:?server url}
provider=${2:?provider url}
here=$(cd "$(dirname "$0")" && pwd)
export AMCTL_SERVER=$url
amctl() { node "$here/../../bin/amctl.mjs" "$@"; }
suffix=$RANDOM$RANDOM

echo "# A provider profile, and two providers bound in it with the key the server holds"
amctl submit --profile-create "models-$suffix" --profile-type local_model_provider --wait >/dev/null
amctl submit --profile "profiles/models-$suffix" --bind-provider demo-openai --provider-api openai \
  --endpoint "$provider/v1" --api-key-ref env:AMCTL_PROVIDER_DEMO_KEY --wait >/dev/null
amctl submit --profile "profiles/models-$suffix" --bind-provider demo-anthropic --provider-api anthropic \
  --endpoint "$provider" --api-key-ref env:AMCTL_PROVIDER_DEMO_KEY --wait >/dev/null

echo "# The agent runs in a personal profile, sandboxed, with a budget of 10 model calls"
amctl submit --profile-create "agent-$suffix" --profile-type personal --wait >/dev/null
amctl submit --profile "profiles/agent-$suffix" --budget modelCalls=10 --budget tokens=10000 --wall-clock 180 \
  --exec --wait -- node "$here/agent.mjs" | tail -n 1
operation=$(amctl list --profile "profiles/agent-$suffix" --type agent_machine.execution.start --json | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8"))[0].name)')

echo "# What it printed"
amctl logs "$operation"

echo "# What it was charged"
amctl get "$operation" --json | node -e 'const o = JSON.parse(require("fs").readFileSync(0, "utf8")).operation; console.log(JSON.stringify({ state: o.state, usage: { modelCalls: o.usage.modelCalls, tokens: o.usage.tokens } }))'

echo "# Its model calls in the audit log"
curl -sS --fail-with-body -X POST -H 'content-type: application/json' -H "authorization: Bearer $AMCTL_TOKEN" \
  -d '{"pageSize": 1000}' "$url/agentmachine.v1.AuditService/ListAuditRecords" | OPERATION=$operation node -e '
  for (const r of JSON.parse(require("fs").readFileSync(0, "utf8")).records)
    if (r.modelCall && r.resource === process.env.OPERATION)
      console.log(JSON.stringify({ allowed: r.decision.allowed === true, rule: r.decision.rule, ...r.modelCall }))'
