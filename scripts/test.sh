#!/usr/bin/env bash
# The README's second command: installs what the tests need, then runs every test: static checks
# (format, lints, the console compiles for wasm32), unit tests, the end-to-end tests (real
# PostgreSQL, git daemon, kiln-master and kiln-slave processes), and the slow tier: real image
# builds (mmdebstrap amd64 and arm64, live-build) and the web console in headless Chromium.
# KILN_FAST=1 skips the slow tier (for quick local iterations only; CI runs everything); the static
# checks run in every tier.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/enable-binfmt.sh || true

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/check-console.sh
cargo build --workspace --bins
# Node packages of the tests (playwright-core; oidc-provider, the OpenID Connect provider the
# sign-in tests run on loopback): cheap, and the fast tier needs them.
(cd tests/browser && npm ci --no-audit --no-fund)
cargo test --workspace
if [ "${KILN_FAST:-0}" != 1 ]; then
  scripts/build-console.sh
  # One image build at a time: they are disk- and CPU-heavy.
  cargo test -p kiln-tests --test e2e -- --ignored --test-threads=1
fi
