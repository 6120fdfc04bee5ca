"""A stock Debian guest (systemd-networkd, systemd-resolved, sshd) behind slirpnet, as users
run one: its lease, hostname, names, HTTP to the host and ssh through a forward.

All of it is checked in one boot (the module's ``booted`` fixture: about 30 s under TCG), and
each test below asserts one part of what that boot reported.  The guest keeps
systemd-networkd's defaults: it takes no MTU from DHCP and stays at 1500 while slirpnet
offers 65520 (integration/debian/build.py).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from integration.debian import DebianImage, DebianRun, boot_async
from integration.debian.services import edns_dns_upstream, http_server
from integration.server import RECORDS, free_tcp_port, serving

LOCAL = ("db.slirpnet.test", "10.0.2.50")  # a --dns-record, answered by slirpnet itself
LOCAL6 = "fec0::50"  # its AAAA record
UPSTREAM = next(iter(RECORDS.items()))  # answered by the loopback upstream
BLOB = random.Random(20261206).randbytes(4 << 20)
SSH_SECONDS = 120.0  # from starting the guest until sshd answers through the forward

# The default route's interface is the NIC, whatever udev named it.
SCRIPT = """
nic=$(ip -4 route show default | awk '{{print $5; exit}}')
# What these two daemons log of their own, not what systemd logs about their units.
daemons="_SYSTEMD_UNIT=systemd-networkd.service _SYSTEMD_UNIT=systemd-hostnamed.service"
check lease ip -4 -o addr show dev "$nic" scope global
check networkd-lease sh -c "journalctl -b -u systemd-networkd | grep 'DHCPv4 address'"
check mtu cat "/sys/class/net/$nic/mtu"
check ping ping -c 1 -W 5 10.0.2.2
check hostname hostname
check no-dhcp-hostname sh -c "! journalctl -b $daemons | grep -i 'host *name'"
check resolved-server resolvectl dns "$nic"
check resolvectl-local resolvectl query --legend=no {local}
check getent-local getent hosts {local}
check resolvectl-upstream resolvectl query --legend=no {upstream}
check getent-upstream getent hosts {upstream}
check edns-local sh -c "dig +noall +comments {local} @10.0.2.3 | grep 'OPT PSEUDOSECTION'"
check edns-upstream sh -c "dig +noall +comments {upstream} @10.0.2.3 | grep 'OPT PSEUDOSECTION'"
check no-degraded sh -c "! journalctl -b -u systemd-resolved | grep -i 'degraded feature set'"
check curl sh -c "curl -fsS http://10.0.2.2:{http}/files/blob | sha256sum"
check sshd systemctl is-active ssh
check host-ssh wait_host ssh {ssh_wait}
check guestfwd timeout 20 bash -c "cat < /dev/tcp/10.0.2.100/4321"
# IPv6: SLAAC from slirpnet's router advertisement (networkd does not wait for it).
# (Linux gives fec0::/10, libslirp's prefix, site scope, not global.)
check slaac sh -c 'for i in $(seq 40); do a=$(ip -6 -o addr show dev '"$nic"' | grep fec0::); \
  [ -n "$a" ] && echo "$a" && exit 0; sleep 0.5; done; exit 1'
check route6 ip -6 route show default
check ping6 ping -6 -c 1 -W 5 fec0::2
check dns6 dig +short AAAA {local} @fec0::3
check curl6 sh -c "curl -fsS 'http://[fec0::2]:{http6}/files/blob' | sha256sum"
"""


@dataclass(frozen=True)
class Booted:
    run: DebianRun
    dns_queries: list[tuple[str, str, int]]  # what reached the loopback upstream
    http_paths: list[str]  # what reached the loopback HTTP server
    banner: bytes  # sshd's first line through the forward, b"" if none came
    slirpnet_status: int | None
    slirpnet_log: str

    def detail(self, *names: str) -> dict[str, str]:
        """The details of checks that must all have passed."""
        results = self.run.results
        assert set(names) <= results.keys(), self.run.report()
        failed = {name: results[name].detail for name in names if not results[name].ok}
        assert failed == {}, self.run.report()
        return {name: results[name].detail for name in names}


@pytest.fixture(scope="module")
def booted(debian_image: DebianImage, tmp_path_factory: pytest.TempPathFactory) -> Booted:
    tmp = tmp_path_factory.mktemp("debian-guest")
    print(f"slirpnet's log: {tmp / 'slirpnet.log'}")
    return trio.run(boot_behind_slirpnet, debian_image, tmp)


async def boot_behind_slirpnet(image: DebianImage, tmp: Path) -> Booted:
    ssh_port = free_tcp_port()
    banner = b""
    async with (
        edns_dns_upstream(dict([UPSTREAM])) as dns,
        http_server({"blob": BLOB}) as http,
        http_server({"blob": BLOB}, host="::1") as http6,
    ):
        args = [
            *("--listen", f"unix:{tmp}/vm.sock", "--control", "none"),
            # A module's fixture starts before conftest's own_state_dir: name one here.
            *("--state-dir", str(tmp / "state")),
            *("--dns-upstream", f"127.0.0.1:{dns.port}"),
            *("--dns-record", "=".join(LOCAL)),
            *("--dns-record", f"{LOCAL[0]}={LOCAL6}"),
            *("--forward", f"tcp:127.0.0.1:{ssh_port}-:22"),
            *("--guestfwd", "tcp:10.0.2.100:4321-cmd:echo guestfwd-ok"),
        ]
        script = http.wait_function() + SCRIPT.format(
            local=LOCAL[0],
            upstream=UPSTREAM[0],
            http=http.port,
            http6=http6.port,
            ssh_wait=int(SSH_SECONDS),
        )
        async with serving(args, tmp / "slirpnet.log") as server, trio.open_nursery() as nursery:

            async def reach_sshd() -> None:
                nonlocal banner
                with trio.move_on_after(SSH_SECONDS):
                    banner = await ssh_banner(ssh_port)
                    http.mark("ssh")

            nursery.start_soon(reach_sshd)
            run = await boot_async(image, server.netdev(), script, timeout=300)
            nursery.cancel_scope.cancel()
    print(f"boot to script {run.boot_seconds} s, whole run {run.seconds:.1f} s")
    return Booted(
        run,
        dns.queries,
        http.requests,
        banner,
        server.process.returncode,
        server.stderr(),
    )


async def ssh_banner(port: int) -> bytes:
    """The first line sshd sends through the forward, retried until the guest is up: until
    then slirpnet takes the connection and resets it."""
    while True:
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                received = b""
                with trio.move_on_after(10):
                    while b"\n" not in received and (chunk := await stream.receive_some()):
                        received += chunk
                if b"\n" in received:
                    return received.split(b"\n", 1)[0]
        except (OSError, trio.BrokenResourceError):
            pass
        await trio.sleep(1)


def test_the_script_ran_to_its_end(booted: Booted) -> None:
    assert not booted.run.timed_out, booted.run.report()
    assert booted.run.rc == 0, booted.run.report()


def test_networkd_takes_the_lease_and_keeps_mtu_1500(booted: Booted) -> None:
    detail = booted.detail("lease", "networkd-lease", "mtu", "ping")
    assert " inet 10.0.2.15/24 " in detail["lease"], booted.run.report()
    acquired = "DHCPv4 address 10.0.2.15/24, gateway 10.0.2.2 acquired from 10.0.2.2"
    assert acquired in detail["networkd-lease"], booted.run.report()
    assert detail["mtu"] == "1500", booted.run.report()


def test_the_guest_keeps_its_hostname(booted: Booted) -> None:
    """The guest named itself; a DHCP server that hands back a host name (option 12) has
    networkd try to set it, which shows in its journal."""
    detail = booted.detail("hostname", "no-dhcp-hostname")
    assert detail["hostname"] == "debguest"


def test_resolved_resolves_local_and_upstream_names(booted: Booted) -> None:
    """Through systemd-resolved both ways: its D-Bus API and the stub in resolv.conf."""
    names = ["resolved-server"]
    names += [f"{way}-{kind}" for way in ("resolvectl", "getent") for kind in ("local", "upstream")]
    detail = booted.detail(*names)
    # networkd takes DNS from DHCP and from the RA's RDNSS (and DHCPv6) alike.
    servers = detail["resolved-server"].split(":", 1)[1].split()
    assert set(servers) == {"10.0.2.3", "fec0::3"}, booted.run.report()
    # The local name has an AAAA record too, which resolved and getent may list first.
    for kind, (name, addresses) in (
        ("local", (LOCAL[0], {LOCAL[1], LOCAL6})),
        ("upstream", (UPSTREAM[0], {UPSTREAM[1]})),
    ):
        answer = detail[f"resolvectl-{kind}"].removeprefix(f"{name}: ").split()[0]
        assert answer in addresses, booted.run.report()
        got = detail[f"getent-{kind}"].split()
        assert got[0] in addresses and got[1:] == [name], booted.run.report()
    assert ("udp", UPSTREAM[0], 1) in booted.dns_queries, booted.dns_queries
    assert LOCAL[0] not in {name for _, name, _ in booted.dns_queries}, booted.dns_queries


def test_resolved_keeps_edns(booted: Booted) -> None:
    """Answers to EDNS queries carry an OPT record (RFC 6891 §7), slirpnet's own and those
    it forwards from an upstream that has one, so resolved never falls back to plain DNS."""
    booted.detail("edns-local", "edns-upstream", "no-degraded")


def test_curl_fetches_from_the_host_intact(booted: Booted) -> None:
    detail = booted.detail("curl")
    assert detail["curl"] == f"{hashlib.sha256(BLOB).hexdigest()}  -", booted.run.report()
    assert "/files/blob" in booted.http_paths, booted.http_paths


def test_sshd_answers_through_a_forward(booted: Booted) -> None:
    booted.detail("sshd", "host-ssh")
    assert booted.banner.startswith(b"SSH-2.0-OpenSSH"), (booted.banner, booted.run.report())


def test_slirpnet_stops_cleanly(booted: Booted) -> None:
    assert booted.slirpnet_status == 0, booted.slirpnet_log
    assert "Traceback" not in booted.slirpnet_log, booted.slirpnet_log


def test_a_guestfwd_service_is_reached(booted: Booted) -> None:
    assert booted.detail("guestfwd")["guestfwd"] == "guestfwd-ok", booted.run.report()


def test_the_guest_takes_ipv6_from_the_router_advertisement(booted: Booted) -> None:
    """SLAAC in fec0::/64 (RFC 4862), the default route via the gateway's link-local
    address, ping, DNS and HTTP to the host's ::1 over IPv6."""
    detail = booted.detail("slaac", "route6", "ping6", "dns6", "curl6")
    assert " inet6 fec0::" in detail["slaac"] and "/64 " in detail["slaac"], booted.run.report()
    assert detail["route6"].startswith("default via fe80::5055:aff:fe00:202"), booted.run.report()
    assert detail["dns6"] == LOCAL6, booted.run.report()
    assert detail["curl6"] == f"{hashlib.sha256(BLOB).hexdigest()}  -", booted.run.report()
