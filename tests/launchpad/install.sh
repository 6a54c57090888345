#!/usr/bin/env bash
# Installs what the Launchpad end-to-end tests' fake provider needs from PyPI (the OpenID teams
# extension, pinned by hash in requirements.txt) into a private directory: never system-wide.
# Idempotent and safe to run from several tests at once. Debian's python3-openid, python3-six and
# python3-pip come from scripts/install-deps.sh.
#
# Usage: tests/launchpad/install.sh [DIR]     (default: $KILN_PYDEPS_DIR, else target/launchpad-py)
# Prints the directory to put on PYTHONPATH as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-${KILN_PYDEPS_DIR:-$here/../../target/launchpad-py}}"
py=/usr/bin/python3
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
stamp="$dir/.installed-$(sha256sum "$here/requirements.txt" | cut -c1-16)"

if ! "$py" -c 'import openid, six' 2>/dev/null; then
  echo "$py cannot import openid (python3-openid) and six: run scripts/install-deps.sh" >&2
  exit 1
fi

exec 9>"$dir.lock"
flock 9
if [ ! -e "$stamp" ]; then
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"
  "$py" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
    --no-build-isolation --root-user-action=ignore --require-hashes \
    --target "$tmp" -r "$here/requirements.txt" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  touch "$stamp"
fi
PYTHONPATH="$dir" "$py" -c 'import openid_teams.teams' || {
  echo "the teams extension in $dir does not import" >&2
  exit 1
}
echo "$dir"
