#!/usr/bin/env bash
# Installs what Kiln needs from Debian's archive, only what is missing (idempotent).
# Usage: scripts/install-deps.sh            (runtime + test tools)
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config git ca-certificates curl
  # Debian packages of Kiln (scripts/package.sh checks them with lintian; the packaging test
  # boots a root with them installed with systemd-nspawn --boot)
  lintian systemd-container
  # database (server binaries for the embedded/private cluster, psql for tests)
  postgresql postgresql-client
  # image backends and the tools they call
  mmdebstrap live-build debootstrap fdisk e2fsprogs zstd xz-utils dosfstools mtools arch-test
  # debos (natively here: its fakemachine's kernel is a recommended package, not installed), vmdb2
  debos parted vmdb2 kpartx qemu-utils
  # what an image carries: its layout is read with sfdisk, blkid and debugfs (above); tests
  # flash with bmaptool and check SBOMs with the SPDX validator (in a venv, from PyPI)
  bmap-tools python3-venv
  # signed checksums are verified with the reference minisign tool
  minisign
  # foreign architectures through qemu-user
  qemu-user-static binfmt-support
  # boot tests of amd64 images (`[boot]` in kiln.toml; arm64 images need qemu-system-arm)
  qemu-system-x86
  # the web console's precompressed assets (scripts/build-console.sh: gzip -9 and brotli)
  gzip brotli
  # browser tests of the web console
  chromium chromium-driver
  # Launchpad sign-in tests: a real OpenID 2.0 provider (python3-openid; the teams extension
  # comes from PyPI through tests/launchpad/install.sh, into target/, with pip)
  python3 python3-openid python3-six python3-pip python3-setuptools python3-wheel
  # notification tests: a real SMTP server on loopback (tests/support/smtp_sink.py) that the
  # master's mailer delivers to
  python3-aiosmtpd
  # several masters serving one farm are tested behind a real load balancer
  haproxy
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The postgresql package starts a system cluster; Kiln runs its own, so leave that one be.
fi

# debos recommends systemd-resolved, which (installed with recommends, outside systemd) leaves
# /etc/resolv.conf a dangling link: put back the copy it saved.
if [ -L /etc/resolv.conf ] && [ ! -e /etc/resolv.conf ] && [ -f /etc/.resolv.conf.systemd-resolved.bak ]; then
  echo "restoring /etc/resolv.conf (left dangling by systemd-resolved)"
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO rm -f /etc/resolv.conf
  $SUDO cp /etc/.resolv.conf.systemd-resolved.bak /etc/resolv.conf
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "no Node.js found (the browser tests use it): installing Debian's nodejs and npm"
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi

if ! command -v cargo >/dev/null; then
  echo "no Rust toolchain found: installing Debian's rustc and cargo"
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cargo rustc
fi
