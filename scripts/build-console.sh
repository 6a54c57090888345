#!/usr/bin/env bash
# Builds the web console (frontend/, Yew) with Trunk into frontend/dist, provisioning a
# wasm-capable toolchain first, idempotently:
#  1. rustup's wasm32-unknown-unknown target, with trunk and wasm-bindgen-cli (the version
#     Cargo.lock needs) installed by cargo into ~/.cargo/bin; or, where rustup cannot download,
#  2. a cached Debian forky chroot with Debian's rustc and wasm std (KILN_CACHE, default
#     ~/.cache/kiln), where the same tools are installed and the build runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${KILN_CACHE:-$HOME/.cache/kiln}
WB_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
TRUNK_VERSION=${KILN_TRUNK_VERSION:-0.21.14}
[ -n "$WB_VERSION" ] || { echo "build-console: wasm-bindgen is not in Cargo.lock"; exit 1; }

have_tools() {  # $1: command prefix to run tools with
  $1 wasm-bindgen --version 2>/dev/null | grep -q " $WB_VERSION" && $1 trunk --version >/dev/null 2>&1
}

# KILN_WASM_CHROOT=1 forces the chroot path (to test it on a machine where rustup works).
if [ "${KILN_WASM_CHROOT:-0}" != 1 ] && rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $WB_VERSION"; then
    cargo install wasm-bindgen-cli --version "$WB_VERSION" --force
  fi
  command -v trunk >/dev/null || cargo install trunk --version "$TRUNK_VERSION" --locked
  trunk build --release
else
  echo "build-console: using a Debian forky chroot (rustup cannot add wasm32-unknown-unknown here, or KILN_WASM_CHROOT=1)"
  CHROOT=$CACHE/wasm-chroot
  if [ ! -e "$CHROOT/.kiln-ready" ]; then
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
    rm -rf "$CHROOT"; mkdir -p "$CACHE"
    mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
      --include=rustc,cargo,libstd-rust-dev-wasm32,lld,binaryen,gcc,libc6-dev,ca-certificates,git,pkg-config \
      forky "$CHROOT" "$MIRROR"
    cp /etc/ssl/certs/ca-certificates.crt "$CHROOT/usr/local/share/ca-certificates/host.crt"
    chroot "$CHROOT" update-ca-certificates >/dev/null
    touch "$CHROOT/.kiln-ready"
  fi
  mkdir -p "$CHROOT/src"
  mountpoint -q "$CHROOT/src" || mount --bind "$ROOT" "$CHROOT/src"
  trap 'umount "$CHROOT/src" 2>/dev/null || true' EXIT
  for fs in proc dev; do mountpoint -q "$CHROOT/$fs" || mount --bind "/$fs" "$CHROOT/$fs"; done
  trap 'umount "$CHROOT/src" "$CHROOT/proc" "$CHROOT/dev" 2>/dev/null || true' EXIT
  IN="chroot $CHROOT env HOME=/root PATH=/root/.cargo/bin:/usr/bin:/bin CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld CARGO_TARGET_DIR=/root/target"
  if ! have_tools "$IN"; then
    $IN cargo install wasm-bindgen-cli --version "$WB_VERSION" --force
    $IN cargo install trunk --version "$TRUNK_VERSION" --locked
  fi
  $IN sh -c "cd /src && trunk build --release"
fi
ls -l frontend/dist
