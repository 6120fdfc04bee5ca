#!/usr/bin/env bash
# Debian packages that the integration tests need; safe to run again.
# The guest's kernel and busybox-static are not installed here: integration/guest/build.py
# fetches them with `apt-get download`, from the package lists this update brings.  Nor is
# QEMU 10 (bookworm-backports; its reconnect-ms is tested beside 7.2): the test fetches and
# unpacks it into the guest cache through an apt configuration of its own
# (integration/guest/newqemu.py), leaving the system's QEMU 7.2 as it is.
set -euo pipefail

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
# qemu-system-x86: the guests; zstd: kernel modules shipped .ko.zst; vde2: vde_switch,
# vde_plug and dpipe; iproute2: network namespaces and taps for the Linux-stack guest;
# gcc, libc6-dev: small static programs for the test guest (integration/guest/programs.py);
# busybox-static: its udhcpc takes that guest's lease; nftables: the blackholed namespace host;
# iperf3: the benchmark's throughput (integration/bench/compare.py);
# python3-venv, python3-dev, sudo, git: the README's quick start, run as printed in a fresh
# clone with Debian's python3 (integration/test_quick_start.py); tcpdump: reads a running
# VM's capture there.
# podman, runc, netavark, aardvark-dns, iptables, debootstrap: integration/test_compose.py runs
# docker/ for real where no Docker engine is (runc: podman's crun refuses hybrid cgroups;
# netavark and aardvark-dns: compose services find each other by name; debootstrap: the
# images' base, as no registry is reachable).  podman-compose comes from PyPI (the test extra):
# Debian's 1.0.3 goes on after a failed build.
# debootstrap, e2fsprogs (mkfs.ext4 -d): the Debian guest's image (integration/debian/build.py).
# libgcc-12-dev: libasan for the C module's AddressSanitizer test (tests/test_native_asan.py).
# bind9-dnsutils: dig, a real resolver's DNS over TCP and EDNS (integration/test_server_dns.py).
# isc-dhcp-client, dhcpcd-base: real DHCP clients one after another on one MAC, dhclient then
# dhcpcd with a DUID, in a namespace (integration/test_dhcp_clients.py); dhcpcd-base is
# bookworm's dhcpcd binary without the service that the dhcpcd package would start.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends qemu-system-x86 zstd vde2 iproute2 gcc libc6-dev \
    busybox-static nftables iperf3 python3-venv python3-dev sudo git tcpdump \
    podman runc netavark aardvark-dns iptables debootstrap e2fsprogs libgcc-12-dev \
    bind9-dnsutils isc-dhcp-client dhcpcd-base
