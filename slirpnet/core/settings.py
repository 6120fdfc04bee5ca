"""What one virtual network looks like: addresses, services and policy.

Defaults are libslirp's (QEMU ``-netdev user``), so a user switching backends
changes one flag: 10.0.2.0/24, gateway 10.0.2.2 standing for the host, DNS on
10.0.2.3, leases from 10.0.2.15 for 24 hours.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from attrs import frozen

from slirpnet.core import guestfwd
from slirpnet.core.dnsrecords import LocalRecords
from slirpnet.core.guestfwd import GuestForward

# passt's choice: the largest MTU a 65535-byte stream frame carries with room to spare.
# Fewer, larger frames are what make a Python data path fast.
DEFAULT_MTU = 65520
VDE_MTU = 1500
MIN_MTU = 576  # RFC 791: every host must accept datagrams this large
MIN_MTU6 = 1280  # RFC 8200 §5: IPv6 needs a link this large
# Flows (TCP connections, UDP and echo conversations, DNS queries) a VM may hold at
# once; beyond it a new TCP connection gets a RST.  Each is a host socket, and an idle
# TCP flow weighs about 11 KiB of Python heap; 16384 holds the 10,000 idle connections
# of the benchmark with room to spare.  A busy TCP flow may hold 80 KiB of its own
# (core/budget.py), so this also bounds a VM's memory: 64 MiB + 16384 x 80 KiB, 1.3 GiB
# at worst; lower it where many untrusted VMs share a host.
DEFAULT_MAX_FLOWS = 16384
# Of those, TCP connections the host is still connecting at once: each holds a socket
# for up to CONNECT_TIMEOUT, the cost a SYN flood to a silent network runs up.
# Chromium, a busy client, keeps at most 256 sockets in a pool.
DEFAULT_MAX_CONNECTING = 256
# DHCP leases (bound, or offered and held) one VM may have at once: a guest spraying
# client hardware addresses takes this many addresses of the pool and no more.
DEFAULT_MAX_LEASES = 8
DEFAULT_HOST_NAME = "host.slirpnet.internal"
# RFC 4862 §5.5.3: SLAAC forms an address from a /64 prefix and a 64-bit interface ID.
SLAAC_PREFIX_LEN = 64


@frozen
class Upstream:
    address: IPv4Address | IPv6Address
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@frozen
class StaticLease:
    mac: bytes
    address: IPv4Address


@frozen(kw_only=True)
class NetworkSettings:
    network: IPv4Network = IPv4Network("10.0.2.0/24")
    gateway: IPv4Address = IPv4Address("10.0.2.2")
    dns: IPv4Address = IPv4Address("10.0.2.3")
    dhcp_start: IPv4Address = IPv4Address("10.0.2.15")
    mtu: int = DEFAULT_MTU
    lease_time: int = 24 * 3600
    domain: str | None = None
    search: tuple[str, ...] = ()
    dns_upstreams: tuple[Upstream, ...] = ()
    dns_records: tuple[tuple[str, IPv4Address | IPv6Address], ...] = ()  # A and AAAA
    # Local records for the gateway, i.e. the host: A, and AAAA with IPv6.
    host_name: str | None = DEFAULT_HOST_NAME
    static_leases: tuple[StaticLease, ...] = ()
    host_loopback: bool = True
    restrict: bool = False
    udp_idle_timeout: float = 60.0
    dns_timeout: float = 2.0  # per upstream, before the next one is tried
    max_flows: int = DEFAULT_MAX_FLOWS  # per VM
    max_connecting: int = DEFAULT_MAX_CONNECTING  # per VM
    max_leases: int = DEFAULT_MAX_LEASES  # per VM
    deny: tuple[IPv4Network | IPv6Network, ...] = ()  # host destinations flows may not reach
    # IPv6, libslirp's defaults: the gateway stands for the host's ::1 as 10.0.2.2 does
    # for 127.0.0.1.  ``ipv6=False`` (``--no-ipv6``) leaves every IPv6 frame unanswered.
    ipv6: bool = True
    network6: IPv6Network = IPv6Network("fec0::/64")
    gateway6: IPv6Address = IPv6Address("fec0::2")
    dns6: IPv6Address = IPv6Address("fec0::3")
    # Network boot: a read-only TFTP root (the shell reads it; None: no TFTP server), the
    # boot file DHCP names (a path under it, or an http(s) URL) and option 66's server name.
    tftp_root: str | None = None
    bootfile: str | None = None
    tftp_server_name: str | None = None
    # DHCP option 12, sent only when configured (libslirp's ``hostname=``): one for every
    # guest, or by MAC (which wins).
    dhcp_hostname: str | None = None
    dhcp_hostnames: tuple[tuple[bytes, str], ...] = ()
    # Guest forwards (libslirp's ``guestfwd=``): virtual addresses whose TCP ports lead
    # to a host socket or a command (core/guestfwd.py).
    guest_forwards: tuple[GuestForward, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])

    def problems(self) -> list[str]:
        """What is inconsistent, each naming the field; empty when all is well."""
        found = []
        net = self.network
        for name in ("gateway", "dns", "dhcp_start"):
            address = getattr(self, name)
            if address not in net or address in (net.network_address, net.broadcast_address):
                found.append(f"{name}: {address} is not a host address of {net}")
        if self.gateway == self.dns:
            found.append(f"dns: {self.dns} is the gateway's address too")
        if not MIN_MTU <= self.mtu <= DEFAULT_MTU:
            found.append(f"mtu: {self.mtu} is outside {MIN_MTU}..{DEFAULT_MTU}")
        elif self.ipv6 and self.mtu < MIN_MTU6:
            found.append(f"mtu: IPv6 needs at least {MIN_MTU6} (RFC 8200 §5); or turn it off")
        for name in ("max_flows", "max_connecting", "max_leases"):
            if getattr(self, name) < 1:
                found.append(f"{name}: {getattr(self, name)} leaves no room for a single one")
        net6 = self.network6
        if net6.prefixlen != SLAAC_PREFIX_LEN:
            found.append(f"network6: {net6} is not a /64, which SLAAC needs (RFC 4862)")
        for name in ("gateway6", "dns6"):
            address = getattr(self, name)
            if address not in net6 or address == net6.network_address:
                found.append(f"{name}: {address} is not a host address of {net6}")
        if self.gateway6 == self.dns6:
            found.append(f"dns6: {self.dns6} is the gateway's address too")
        if net.prefixlen > 30:
            found.append(f"network: {net} has no room for a gateway, DNS and a guest")
        reserved = {self.gateway, self.dns, net.network_address, net.broadcast_address}
        macs, addresses = set(), set()
        for lease in self.static_leases:
            if lease.address not in net or lease.address in reserved:
                found.append(f"static_leases: {lease.address} is not a guest address of {net}")
            if lease.mac in macs or lease.address in addresses:
                found.append(f"static_leases: {lease.address} or its MAC is given twice")
            macs.add(lease.mac)
            addresses.add(lease.address)
        taken = {self.gateway: "the gateway's", self.dns: "the DNS server's"}
        taken |= {lease.address: "a static lease's" for lease in self.static_leases}
        found += guestfwd.problems(self.guest_forwards, net, taken)
        return found

    def gateway_for(self, address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
        """The gateway's address in ``address``'s family."""
        return self.gateway if address.version == 4 else self.gateway6

    def dns_for(self, address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
        return self.dns if address.version == 4 else self.dns6

    def denied(self, address: IPv4Address | IPv6Address) -> bool:
        """Is ``address``, a host socket's destination, on the deny list?"""
        return any(address in network for network in self.deny)

    def local_records(self) -> LocalRecords:
        """Names answered without asking upstream: a record given for the host name
        replaces the host's addresses."""
        records = LocalRecords(self.dns_records)
        if self.host_name and self.host_name not in records:
            records.set(self.host_name, self.gateway)
            if self.ipv6:
                records.set(self.host_name, self.gateway6)
        return records
