#!/usr/bin/env bash
# Debian packages that the QEMU guest harness (integration/guest) needs; safe to run again.
# The guest's kernel and busybox-static are not installed here: build.py fetches them with
# `apt-get download` (busybox-static would conflict with a host's busybox), and the package
# lists this update brings are what it resolves them from.
set -euo pipefail

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
# zstd unpacks kernel modules on kernels that ship them .ko.zst (bookworm's are plain .ko).
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends qemu-system-x86 zstd
