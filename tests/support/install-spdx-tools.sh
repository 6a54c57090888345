#!/usr/bin/env bash
# Installs the SPDX project's own validator (`pyspdxtools`, PyPI's spdx-tools, pinned in
# spdx-requirements.txt) into a private virtualenv: never system-wide. The image record tests
# check Kiln's SBOMs with it. Idempotent and safe to run from several tests at once. Debian's
# python3-venv comes from scripts/install-deps.sh.
#
# Usage: tests/support/install-spdx-tools.sh [DIR]   (default: $KILN_SPDX_DIR, else target/spdx-venv)
# Prints the path of pyspdxtools as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-${KILN_SPDX_DIR:-$here/../../target/spdx-venv}}"
py=/usr/bin/python3
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
stamp="$dir/.installed-$(sha256sum "$here/spdx-requirements.txt" | cut -c1-16)"

exec 9>"$dir.lock"
flock 9
if [ ! -e "$stamp" ]; then
  rm -rf "$dir"
  "$py" -m venv "$dir" >&2 || {
    echo "$py cannot make a virtualenv (python3-venv): run scripts/install-deps.sh" >&2
    exit 1
  }
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input \
    -r "$here/spdx-requirements.txt" >&2
  touch "$stamp"
fi
"$dir/bin/pyspdxtools" --help > /dev/null
echo "$dir/bin/pyspdxtools"
