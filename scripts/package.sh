#!/usr/bin/env bash
# Builds the Debian packages kiln-master and kiln-slave with cargo-deb into target/debian/
# (their metadata: [package.metadata.deb] in master/Cargo.toml and slave/Cargo.toml; units,
# config, maintainer scripts: packaging/debian/), then checks them with lintian, which must report
# no error. cargo-deb is installed with cargo when missing (once; then cached in ~/.cargo/bin).
# The master's package carries the web console: frontend/dist is built first when absent
# (scripts/build-console.sh).
#
# Usage: scripts/package.sh          release build (what a user installs)
#        scripts/package.sh --dev    package the dev-profile binaries already in target/debug
#                                    (stripped; what the tests use to save a release build)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
  "") ;;
  --dev) profile=dev ;;
  *) echo "usage: scripts/package.sh [--dev]" >&2; exit 2 ;;
esac

# Pinned: the packages' metadata and the options below are this version's (a newer one may refuse
# --profile dev, which it already warns about).
cargo_deb_version=3.8.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
  echo "package: installing cargo-deb $cargo_deb_version (cargo install cargo-deb --locked)"
  cargo install cargo-deb --version "$cargo_deb_version" --locked --force
fi
command -v lintian >/dev/null || { echo "package: lintian is missing (scripts/install-deps.sh)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "package: dpkg-deb is missing (scripts/install-deps.sh)" >&2; exit 1; }

if [ ! -f frontend/dist/index.html ]; then
  echo "package: frontend/dist has no built console: building it (scripts/build-console.sh)"
  scripts/build-console.sh
fi

out=target/debian
mkdir -p "$out"
# Only this version's packages are left in target/debian, so `target/debian/kiln-*.deb` names them.
rm -f "$out"/kiln-master_*.deb "$out"/kiln-slave_*.deb

debs=()
for p in kiln-master kiln-slave; do
  if [ "$profile" = dev ]; then
    # The binaries `cargo build --workspace --bins` made (not rebuilt here: a build of one
    # package alone unifies features differently and would relink them); cargo-deb strips them.
    [ -x "target/debug/$p" ] || {
      echo "package: target/debug/$p is missing: run cargo build --workspace --bins first" >&2
      exit 1
    }
    cargo deb -p "$p" --profile dev --no-build --strip --no-separate-debug-symbols --no-dbgsym \
      --fast --output "$out"
  else
    cargo deb -p "$p" --output "$out"
  fi
  debs+=("$(ls -t "$out"/"$p"_*.deb | head -n1)")
done

echo "package: lintian ${debs[*]}"
# Errors fail the script; warnings are shown (`lintian --info target/debian/*.deb` explains them).
lintian --fail-on error "${debs[@]}"
echo "package: built ${debs[*]}"
