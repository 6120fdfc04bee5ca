"""IPv6 in the Linux-stack guest's namespace: SLAAC from the backend's router advertisements.

The kernel does it all: once the tap is up with ``enable``'s settings, it solicits a
router (RFC 4861 §6.3.7), forms an address in the advertised prefix (RFC 4862 §5.5.3),
checks it with DAD (§5.4) and takes the default route through the router's link-local
address, and an advertised MTU (RFC 4861 §4.6.4) for IPv6.  ``wait_for_slaac`` waits,
bounded, until all of it is there and reads what the kernel made of it.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

import trio
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6ND_RS, ICMPv6NDOptSrcLLAddr
from scapy.layers.l2 import Ether

from integration.linux import system

# libslirp's defaults, which slirpnet keeps.
PREFIX = IPv6Network("fec0::/64")
GATEWAY6 = "fec0::2"  # the host's ::1, as 10.0.2.2 is its 127.0.0.1
DNS6 = "fec0::3"
# Link-local DAD (1 s), the solicitation's random delay (up to 1 s), the global address's
# DAD (1 s): about 3 s when the first solicitation is answered; Linux solicits again every
# 4 s, so 15 s leaves room for one lost answer on a lossy link.
SLAAC_TIMEOUT = 15.0
ETH_P_IPV6 = 0x86DD


class SlaacError(RuntimeError):
    """The namespace got no address, route or MTU from the backend's advertisements."""


@dataclass(frozen=True)
class Slaac:
    address: IPv6Address  # the address SLAAC formed in the prefix, DAD passed
    router: IPv6Address  # the default route's next hop: the router's link-local address
    mtu: int  # the interface's IPv6 MTU (an RA's MTU option sets it)
    router_proto: str  # who made the default route: "ra" when an advertisement did


def enable(netns: str, interface: str) -> None:
    """Let ``interface`` take addresses, routes and an MTU from advertisements."""
    for key, value in (
        ("disable_ipv6", 0),
        # 2: whatever the namespace's forwarding says (RFC 4861 §6.3.4: a router ignores them).
        ("accept_ra", 2),
        ("accept_ra_defrtr", 1),
        ("accept_ra_mtu", 1),
        ("autoconf", 1),
        ("accept_dad", 1),
        # EUI-64 from the MAC: the guest's address is predictable, as in most guests.
        ("addr_gen_mode", 0),
    ):
        sysctl(netns, f"net.ipv6.conf.{interface}.{key}", str(value))


def disable(netns: str, interface: str) -> None:
    """No IPv6 on ``interface``: an IPv4 test's guest sends nothing else."""
    sysctl(netns, f"net.ipv6.conf.{interface}.disable_ipv6", "1")


def sysctl(netns: str, key: str, value: str | None = None) -> str:
    """Read (or set, then read) a sysctl of ``netns``."""
    path = "/proc/sys/" + key.replace(".", "/")
    if value is not None:
        system.run("ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}")
    return system.run("ip", "netns", "exec", netns, "cat", path).strip()


def eui64_address(prefix: IPv6Network, mac: str) -> IPv6Address:
    """The address SLAAC forms from ``mac`` in ``prefix`` (RFC 4291 Appendix A)."""
    octets = bytearray(bytes.fromhex(mac.replace(":", "")))
    octets[0] ^= 0x02  # the universal/local bit, inverted
    interface_id = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return IPv6Address(prefix.network_address.packed[:8] + interface_id)


def read_slaac(netns: str, interface: str, prefix: IPv6Network) -> Slaac | None:
    """What SLAAC has given ``interface`` so far; None until address and route are both there."""
    addresses = json.loads(system.ip("-6", "-j", "addr", "show", "dev", interface, netns=netns))
    formed = [
        IPv6Address(info["local"])
        for link in addresses
        for info in link.get("addr_info", [])
        # fec0::/10 was site-local (RFC 3879 deprecated it): Linux says scope "site".
        if info.get("scope") in ("global", "site")
        and IPv6Address(info["local"]) in prefix
        and not info.get("tentative")
        and not info.get("dadfailed")
    ]
    routes = json.loads(system.ip("-6", "-j", "route", "show", "default", netns=netns))
    routers = [route for route in routes if route.get("dev") == interface and "gateway" in route]
    if not formed or not routers:
        return None
    mtu = int(sysctl(netns, f"net.ipv6.conf.{interface}.mtu"))
    return Slaac(formed[0], IPv6Address(routers[0]["gateway"]), mtu, routers[0].get("protocol", ""))


async def wait_for_slaac(
    netns: str, interface: str, prefix: IPv6Network = PREFIX, timeout: float = SLAAC_TIMEOUT
) -> Slaac:
    """Until ``interface`` has its SLAAC address and default route, at most ``timeout`` s."""
    with trio.move_on_after(timeout):
        while (slaac := read_slaac(netns, interface, prefix)) is None:
            await trio.sleep(0.1)
        return slaac
    state = "\n".join(
        subprocess.run(
            ["ip", "-n", netns, "-6", *what], capture_output=True, text=True, check=False
        ).stdout
        for what in (("addr",), ("route",))
    )
    raise SlaacError(f"no SLAAC address in {prefix} and default route after {timeout} s:\n{state}")


def interface_index(netns: str, interface: str) -> int:
    link = json.loads(system.ip("-j", "link", "show", "dev", interface, netns=netns))
    index: int = link[0]["ifindex"]
    return index


def interface_mac(netns: str, interface: str) -> str:
    link = json.loads(system.ip("-j", "link", "show", "dev", interface, netns=netns))
    mac: str = link[0]["address"]
    return mac


async def solicit_router(netns: str, interface: str, timeout: float = 5.0) -> Ether:
    """Send a router solicitation from ``interface`` and return the advertisement that
    answers it, the whole frame as it came off the wire (scapy's reading of it)."""
    mac = interface_mac(netns, interface)
    # The kernel sums ICMPv6 on raw sockets (RFC 3542 §3.1): scapy leaves it at 0.
    solicitation = bytes(ICMPv6ND_RS(cksum=0) / ICMPv6NDOptSrcLLAddr(lladdr=mac))
    with system.in_netns(netns):
        capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with capture, sender:
        capture.bind((interface, ETH_P_IPV6))
        # RFC 4861 §6.1.1: a solicitation's hop limit is 255, or routers drop it.
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sender.setsockopt(
            socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_index(netns, interface)
        )
        listening = trio.socket.from_stdlib_socket(capture)
        await trio.socket.from_stdlib_socket(sender).sendto(
            solicitation, ("ff02::2", 0, 0, interface_index(netns, interface))
        )
        with trio.fail_after(timeout):
            while True:
                frame = Ether(await listening.recv(65536))
                if ICMPv6ND_RA in frame:
                    return frame
