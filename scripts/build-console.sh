#!/usr/bin/env bash
# Builds the web console (frontend/, Yew) with Trunk into frontend/dist, provisioning what it
# needs first, idempotently (see scripts/lib/wasm-env.sh: rustup's wasm32 target where it can be
# downloaded, else a cached Debian forky chroot where the build then runs, the host's trunk and
# wasm-bindgen copied in). KILN_WASM_CHROOT=1 forces the chroot path.
# Then every text and wasm asset in dist gets precompressed siblings, `X.gz` (gzip -9) and `X.br`
# (brotli -q 11), which the master serves to browsers that accept them (master/src/web.rs).
# `scripts/build-console.sh --compress DIR` does only that last step, for DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

# Writes DIR/X.gz and DIR/X.br next to each compressible X (wasm, js, css, html, svg, json),
# replacing older ones; a variant that would not be smaller is not kept.
precompress() {
  local dir=$1 f size
  command -v gzip >/dev/null || { echo "build-console: gzip is missing (scripts/install-deps.sh)"; return 1; }
  command -v brotli >/dev/null || { echo "build-console: brotli is missing (scripts/install-deps.sh)"; return 1; }
  find "$dir" -type f \( -name '*.gz' -o -name '*.br' \) -delete
  while IFS= read -r -d '' f; do
    size=$(stat -c %s "$f")
    gzip -9 -n -c -- "$f" >"$f.gz"
    brotli -q 11 -c -- "$f" >"$f.br"
    [ "$(stat -c %s "$f.gz")" -lt "$size" ] || rm -f -- "$f.gz"
    [ "$(stat -c %s "$f.br")" -lt "$size" ] || rm -f -- "$f.br"
  done < <(find "$dir" -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.css' -o -name '*.html' \
             -o -name '*.svg' -o -name '*.json' \) -print0)
}

if [ "${1:-}" = --compress ]; then
  precompress "${2:?usage: build-console.sh --compress DIR}"
  exit 0
fi

# The wasm's name section (function names, a quarter of the file) is not needed in a browser:
# the linker strips it (the profile lives in Cargo.toml; this keeps it without touching it).
# Trunk then runs `wasm-opt -Oz` (frontend/index.html; the features current rustc uses are
# named there because the stripped wasm no longer lists them): binaryen from npm on the host
# (scripts/lib/wasm-env.sh), Debian's in the forky chroot.
export CARGO_PROFILE_WASM_RELEASE_STRIP=${CARGO_PROFILE_WASM_RELEASE_STRIP:-symbols}

. scripts/lib/wasm-env.sh

wasm_host_tools
if wasm_rustup_target; then
  trunk build --release
else
  echo "build-console: building in a Debian forky chroot (rustup cannot add wasm32-unknown-unknown here, or KILN_WASM_CHROOT=1)"
  wasm_chroot_provision
  install -m 0755 "$(command -v trunk)" "$(command -v wasm-bindgen)" "$WASM_CHROOT/usr/local/bin/"
  wasm_in_chroot "CARGO_PROFILE_WASM_RELEASE_STRIP=$CARGO_PROFILE_WASM_RELEASE_STRIP trunk build --release"
fi
precompress frontend/dist
ls -l frontend/dist
