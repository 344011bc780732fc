#!/usr/bin/env bash
# A walk-through of the operation commands of amctl against a running server: create a
# profile, run a process that reports progress and wait for it, list, then read its events as
# JSON lines and resume after a stored sequence, the way a script follows the event log.
#   usage: AMCTL_TOKEN=... examples/operations.sh [BASE_URL]     (default http://127.0.0.1:7070)
# AMCTL_TOKEN must hold a credential (see `amctl delegation root`, or the README) that may
# create profiles and run processes: amctl sends it with every call.
# test/e2e/operation-cli.test.ts runs this script against a real server.
set -euo pipefail
: "${AMCTL_TOKEN:?must hold a credential (see amctl delegation root)}"
export AMCTL_SERVER=${1:-http://127.0.0.1:7070}
here=$(cd "$(dirname "$0")" && pwd)
amctl() { node "$here/../bin/amctl.mjs" "$@"; }
# Prints one field of the JSON document on stdin, e.g. `json '.[0].name'`.
json() { node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(new Function("d", `return d${process.argv[1]}`)(JSON.parse(s))))' "$1"; }
profile="walkthrough-$$"

echo "# Create a profile (operations of every other type belong to one)"
amctl submit --profile-create "$profile" --profile-type personal --wait

echo "# Run a process and follow it: it reports progress as JSON lines on fd 3"
amctl submit --profile "$profile" --label example=walkthrough --wall-clock 60 --exec --wait -- \
  node -e 'require("node:fs").writeSync(3, JSON.stringify({ percent: 50, message: "half way" }) + "\n")'

echo "# List the profile's executions"
amctl list --profile "$profile" --type agent_machine.execution.start
operation=$(amctl list --profile "$profile" --label example=walkthrough --json | json '[0].name')

echo "# Its events as JSON lines; a script stores the sequence of the last line it handled"
events=$(amctl watch "$operation" --json)
echo "$events"
after=$(head -n 1 <<<"$events" | json '.sequence')   # say it handled only the first one

echo "# ...and resumes after it: every later event, none twice (here: after sequence $after)"
amctl watch "$operation" --json --after "$after"

echo "# All events of the profile after that sequence, live, until Ctrl-C (here: 3 seconds)"
status=0
timeout --preserve-status -s INT 3 node "$here/../bin/amctl.mjs" watch --profile "$profile" --after "$after" || status=$?
# 0: watch ended on Ctrl-C as it should; 130: the signal came while node was still starting
# (a loaded machine), before watch could handle it.
[ "$status" -eq 0 ] || [ "$status" -eq 130 ]
