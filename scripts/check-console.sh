#!/usr/bin/env bash
# Type-checks the web console for the browser: `cargo check --target wasm32-unknown-unknown -p
# kiln-frontend`, with the toolchain build-console.sh uses (scripts/lib/wasm-env.sh: rustup's
# wasm32 target, else the cached Debian forky chroot). Faster than a build: no trunk, no
# wasm-bindgen, no optimisation. Native checks and tests of the same crate run on the host:
# `cargo test -p kiln-frontend`. KILN_WASM_CHROOT=1 forces the chroot path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/wasm-env.sh

check="cargo check --target wasm32-unknown-unknown -p kiln-frontend"
if wasm_rustup_target; then
  $check
else
  echo "check-console: checking in a Debian forky chroot (rustup cannot add wasm32-unknown-unknown here, or KILN_WASM_CHROOT=1)"
  wasm_chroot_provision
  wasm_in_chroot "$check"
fi
echo "check-console: kiln-frontend type-checks for wasm32"
