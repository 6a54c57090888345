# Sourced by scripts/build-console.sh and scripts/check-console.sh: where the web console's
# wasm32 toolchain comes from, provisioned idempotently.
#  - the wasm32-unknown-unknown standard library comes from rustup where it can be downloaded;
#  - elsewhere from a cached Debian forky chroot (KILN_CACHE, default ~/.cache/kiln) with
#    Debian's rustc and libstd-rust-dev-wasm32, where the command then runs, the repository
#    bind-mounted at /src;
#  - trunk and wasm-bindgen-cli (the version Cargo.lock needs) are host tools, installed with the
#    host's cargo into ~/.cargo/bin (only the build needs them).
# KILN_WASM_CHROOT=1 forces the chroot path (to test it where rustup works).
# The caller has `set -euo pipefail` and runs from the repository's root.

WASM_ROOT=$(pwd)
WASM_CACHE=${KILN_CACHE:-$HOME/.cache/kiln}
WASM_CHROOT=$WASM_CACHE/wasm-chroot
export PATH="$HOME/.cargo/bin:$PATH"

# Installs trunk and the wasm-bindgen-cli that matches Cargo.lock, unless already there.
wasm_host_tools() {
  local wb_version trunk_version=${KILN_TRUNK_VERSION:-0.21.14}
  wb_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p' || true)
  [ -n "$wb_version" ] || { echo "wasm-env: wasm-bindgen is not in Cargo.lock"; return 1; }
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wb_version\b"; then
    cargo install wasm-bindgen-cli --version "$wb_version" --force
  fi
  if ! trunk --version 2>/dev/null | grep -q " $trunk_version\b"; then
    cargo install trunk --version "$trunk_version" --locked --force
  fi
  # wasm-opt (Trunk runs it, frontend/index.html): Debian bookworm's binaryen (108) breaks the
  # externref table that current wasm-bindgen emits; binaryen's own release on npm (wasm-opt
  # compiled to wasm, run by Node) does not. Cached in KILN_CACHE, first on PATH.
  local bn_version=${KILN_BINARYEN_VERSION:-132.0.0} bn=$WASM_CACHE/binaryen
  if ! "$bn/node_modules/.bin/wasm-opt" --version 2>/dev/null | grep -q "version_${bn_version%%.*})"; then
    command -v npm >/dev/null || { echo "wasm-env: npm is missing (scripts/install-deps.sh)"; return 1; }
    mkdir -p "$bn"
    (cd "$bn" && npm install --no-save --no-package-lock --no-audit --no-fund --silent "binaryen@$bn_version")
  fi
  export PATH="$bn/node_modules/.bin:$PATH"
}

# True when the host's rustup provides the wasm32 target (and the chroot is not forced).
wasm_rustup_target() {
  [ "${KILN_WASM_CHROOT:-0}" != 1 ] && rustup target add wasm32-unknown-unknown >/dev/null 2>&1
}

# Creates the Debian forky chroot with rustc, cargo and the wasm32 standard library, once.
wasm_chroot_provision() {
  [ -e "$WASM_CHROOT/.kiln-ready" ] && return 0
  local mirror
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
  rm -rf "$WASM_CHROOT"; mkdir -p "$WASM_CACHE"
  mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
    --include=rustc,cargo,libstd-rust-dev-wasm32,lld,binaryen,gcc,libc6-dev,ca-certificates,git,pkg-config \
    forky "$WASM_CHROOT" "$mirror"
  cp /etc/ssl/certs/ca-certificates.crt "$WASM_CHROOT/usr/local/share/ca-certificates/host.crt"
  chroot "$WASM_CHROOT" update-ca-certificates >/dev/null 2>&1 || true
  touch "$WASM_CHROOT/.kiln-ready"
}

# Runs the shell command "$1" in the chroot, in the repository (/src), with wasm-ld as the
# wasm32 linker and its own target dir; mounts are undone when the calling script exits.
wasm_in_chroot() {
  mkdir -p "$WASM_CHROOT/src"
  trap 'umount "$WASM_CHROOT/src" "$WASM_CHROOT/proc" "$WASM_CHROOT/dev" 2>/dev/null || true' EXIT
  mountpoint -q "$WASM_CHROOT/src" || mount --bind "$WASM_ROOT" "$WASM_CHROOT/src"
  local fs
  for fs in proc dev; do mountpoint -q "$WASM_CHROOT/$fs" || mount --bind "/$fs" "$WASM_CHROOT/$fs"; done
  chroot "$WASM_CHROOT" env HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld CARGO_TARGET_DIR=/root/target \
    sh -c "cd /src && $1"
}
