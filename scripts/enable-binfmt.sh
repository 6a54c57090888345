#!/usr/bin/env bash
# Lets this machine run foreign-architecture binaries through qemu-user (for arm64/armhf images
# on an amd64 slave). Best effort: says what is missing and exits 0, since native slaves need none.
set -uo pipefail
if [ "$(id -u)" != 0 ]; then echo "enable-binfmt: not root, skipping"; exit 0; fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
    echo "enable-binfmt: cannot mount binfmt_misc here; foreign-architecture builds will be refused"; exit 0; }
fi
for fmt in qemu-aarch64 qemu-arm; do
  if [ -e "/usr/share/binfmts/$fmt" ] || [ -e "/var/lib/binfmts/$fmt" ]; then
    update-binfmts --enable "$fmt" 2>/dev/null || true
  fi
done
for fmt in qemu-aarch64 qemu-arm; do
  if [ -e "/proc/sys/fs/binfmt_misc/$fmt" ]; then
    echo "enable-binfmt: $fmt $(head -1 /proc/sys/fs/binfmt_misc/$fmt)"
  else
    echo "enable-binfmt: $fmt not available"
  fi
done
