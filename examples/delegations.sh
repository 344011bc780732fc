#!/usr/bin/env bash
# Delegated authority from scratch, as an operator would set it up:
#   1. `amctl init` makes the operator key pair: the public key in the data dir, the private key
#      (mode 0600) outside it, in the per-user place for that data dir (it prints where);
#   2. `amctl delegation root --data-dir` finds the private key there and signs a root
#      credential offline with it;
#   3. the server (started on that data dir) trusts the operator's public key;
#   4. the root issues a narrower child credential for an agent, which can do only that;
#   5. revoking the child ends its authority at once.
#   usage: examples/delegations.sh DATA_DIR [BASE_URL]
# DATA_DIR must be the data dir of the server at BASE_URL, or one not yet served: the script
# runs `amctl init` there if it has no operator key. test/e2e/governance-cli.test.ts runs it.
set -euo pipefail
data_dir=$1
url=${2:-http://127.0.0.1:7070}
here=$(cd "$(dirname "$0")" && pwd)
amctl() { node "$here/../bin/amctl.mjs" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -f "$data_dir/operator/operator.pub" ] || amctl init --data-dir "$data_dir"

echo "# A root credential, signed offline (valid 1 hour)"
amctl delegation root --data-dir "$data_dir" --subject ops --may-delegate --ttl 1h > "$work/root.jwt"
amctl --token-file "$work/root.jwt" whoami --server "$url"

echo "# A profile, made with the root"
amctl --token-file "$work/root.jwt" submit --server "$url" --profile-create agents --profile-type personal --wait

echo "# A child for one agent: tool grants in profiles/agents, git only"
amctl --token-file "$work/root.jwt" delegation issue --server "$url" --subject agent-7 \
  --operation-type agent_machine.tool_grant.apply --profile profiles/agents --tool git --ttl 30m > "$work/agent.jwt"
amctl --token-file "$work/agent.jwt" whoami --server "$url"

echo "# The agent may grant git in its profile ..."
amctl --token-file "$work/agent.jwt" submit --server "$url" --profile agents --grant-tool git --wait

echo "# ... but not run a process (PermissionDenied)"
if amctl --token-file "$work/agent.jwt" submit --server "$url" --profile agents --exec -- true; then
  echo "unexpected: the agent ran a process" >&2
  exit 1
fi

echo "# Revoke the agent's delegation: its credential stops working"
child=$(amctl --token-file "$work/agent.jwt" whoami --server "$url" --json | node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(JSON.parse(s).delegation.name))')
amctl --token-file "$work/root.jwt" delegation revoke --server "$url" "$child" --reason "agent retired"
if amctl --token-file "$work/agent.jwt" whoami --server "$url"; then
  echo "unexpected: a revoked credential still works" >&2
  exit 1
fi
echo "# done"
