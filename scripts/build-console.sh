#!/usr/bin/env bash
# Builds the web console (frontend/, Yew) with Trunk into frontend/dist, provisioning what it
# needs first, idempotently:
#  - trunk and wasm-bindgen-cli (the version Cargo.lock needs) are host tools: installed with the
#    host's cargo into ~/.cargo/bin;
#  - the wasm32-unknown-unknown standard library comes from rustup where it can be downloaded;
#    elsewhere from a cached Debian forky chroot (KILN_CACHE, default ~/.cache/kiln) with Debian's
#    rustc and libstd-rust-dev-wasm32, where the build then runs (the host tools copied in).
# KILN_WASM_CHROOT=1 forces the chroot path (to test it where rustup works).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${KILN_CACHE:-$HOME/.cache/kiln}
WB_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
TRUNK_VERSION=${KILN_TRUNK_VERSION:-0.21.14}
[ -n "$WB_VERSION" ] || { echo "build-console: wasm-bindgen is not in Cargo.lock"; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

if ! wasm-bindgen --version 2>/dev/null | grep -q " $WB_VERSION\b"; then
  cargo install wasm-bindgen-cli --version "$WB_VERSION" --force
fi
if ! trunk --version 2>/dev/null | grep -q " $TRUNK_VERSION\b"; then
  cargo install trunk --version "$TRUNK_VERSION" --locked --force
fi

if [ "${KILN_WASM_CHROOT:-0}" != 1 ] && rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
  trunk build --release
else
  echo "build-console: building in a Debian forky chroot (rustup cannot add wasm32-unknown-unknown here, or KILN_WASM_CHROOT=1)"
  CHROOT=$CACHE/wasm-chroot
  if [ ! -e "$CHROOT/.kiln-ready" ]; then
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
    rm -rf "$CHROOT"; mkdir -p "$CACHE"
    mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
      --include=rustc,cargo,libstd-rust-dev-wasm32,lld,binaryen,gcc,libc6-dev,ca-certificates,git,pkg-config \
      forky "$CHROOT" "$MIRROR"
    cp /etc/ssl/certs/ca-certificates.crt "$CHROOT/usr/local/share/ca-certificates/host.crt"
    chroot "$CHROOT" update-ca-certificates >/dev/null 2>&1 || true
    touch "$CHROOT/.kiln-ready"
  fi
  install -m 0755 "$(command -v trunk)" "$(command -v wasm-bindgen)" "$CHROOT/usr/local/bin/"
  mkdir -p "$CHROOT/src"
  cleanup() { umount "$CHROOT/src" "$CHROOT/proc" "$CHROOT/dev" 2>/dev/null || true; }
  trap cleanup EXIT
  mountpoint -q "$CHROOT/src" || mount --bind "$ROOT" "$CHROOT/src"
  for fs in proc dev; do mountpoint -q "$CHROOT/$fs" || mount --bind "/$fs" "$CHROOT/$fs"; done
  chroot "$CHROOT" env HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld CARGO_TARGET_DIR=/root/target \
    sh -c "cd /src && trunk build --release"
fi
ls -l frontend/dist
