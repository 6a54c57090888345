#!/usr/bin/env bash
# Builds the web console (frontend/, Yew) with Trunk into frontend/dist, provisioning what it
# needs first, idempotently (see scripts/lib/wasm-env.sh: rustup's wasm32 target where it can be
# downloaded, else a cached Debian forky chroot where the build then runs, the host's trunk and
# wasm-bindgen copied in). KILN_WASM_CHROOT=1 forces the chroot path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/wasm-env.sh

wasm_host_tools
if wasm_rustup_target; then
  trunk build --release
else
  echo "build-console: building in a Debian forky chroot (rustup cannot add wasm32-unknown-unknown here, or KILN_WASM_CHROOT=1)"
  wasm_chroot_provision
  install -m 0755 "$(command -v trunk)" "$(command -v wasm-bindgen)" "$WASM_CHROOT/usr/local/bin/"
  wasm_in_chroot "trunk build --release"
fi
ls -l frontend/dist
