#!/usr/bin/env bash
# Fails when the API in proto/ breaks compatibility (buf breaking, FILE rules) with the given
# git ref (default: the previous commit, HEAD~1).
#
# The one escape is visible and reviewable: a deliberate break is accepted only when the same
# change adds a bullet under a "### Breaking" heading in CHANGELOG.md. The bullets present at
# the ref do not count, so an old entry never waves through a new break.
set -euo pipefail
against=${1:-HEAD~1}
cd "$(git rev-parse --show-toplevel)"
buf=node_modules/.bin/buf

if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  echo "buf breaking: no commit '$against' to compare with (first commit or shallow clone): nothing to check"
  exit 0
fi
if ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: '$against' has no buf.yaml (the API did not exist yet): nothing to check"
  exit 0
fi

# Bullets under any "### Breaking" heading (up to the next heading) of a CHANGELOG text.
breaking_bullets() {
  awk '/^#/ { inside = ($0 ~ /^###[[:space:]]+Breaking/) ; next } inside && /^[[:space:]]*[-*][[:space:]]+[^[:space:]]/' | sort -u
}

if out=$("$buf" breaking --against ".git#ref=$against" 2>&1); then
  echo "buf breaking: no breaking change against $against"
  exit 0
fi

now=$( (cat CHANGELOG.md 2>/dev/null || true) | breaking_bullets)
before=$( (git show "$against:CHANGELOG.md" 2>/dev/null || true) | breaking_bullets)
added=$(comm -23 <(printf '%s\n' "$now") <(printf '%s\n' "$before") | sed '/^$/d')

echo "$out"
if [ -n "$added" ]; then
  echo "buf breaking: the breaking changes above are ACCEPTED by these new CHANGELOG.md 'Breaking' entries:"
  echo "$added"
  exit 0
fi
echo "buf breaking: FAILED against $against. If the break is deliberate, add a bullet under '### Breaking' in CHANGELOG.md explaining it."
exit 1
