#!/usr/bin/env bash
# A stand-in agent, run as an execution: before each call it asks the server, with the
# credential the executor gave this attempt (AMCTL_TOKEN, AMCTL_SERVER, AMCTL_OPERATION are in
# its environment), and stops when it is told no.
#   usage: calls.sh TOKENS   (the model call's estimated tokens)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
amctl() { node "$here/../../bin/amctl.mjs" "$@"; }
tokens=${1:-500}

echo "agent: may I use git?"
amctl call tool --tool git
echo "agent: may I call ollama with about $tokens tokens?"
ticket=$(amctl call model --provider ollama --tokens "$tokens" --json | node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(JSON.parse(s).callTicket))')
echo "agent: the call used $((tokens - 100)) tokens in the end"
amctl call report --ticket "$ticket" --tokens "$((tokens - 100))"
