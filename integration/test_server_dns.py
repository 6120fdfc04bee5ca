"""DNS as a guest's resolver sees it: failover, SERVFAIL, local records, and TCP.

One server, three namespaces from a config file, a guest in each, booted together:
``failover``'s first upstream refuses (a closed loopback port) so the second answers;
``dead`` has one that refuses and one that never answers, so the guest gets SERVFAIL;
``tcp`` asks over TCP, as a resolver does after a truncated answer.

Then dig, from the Linux stack in a namespace: over TCP past an upstream that refuses,
and EDNS as dig speaks it to the answers slirpnet builds itself.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest
import trio
from scapy.layers.dns import DNS, DNSQR

from integration.conftest import skip_unless_linux_guest
from integration.guest import GuestImage, GuestRun, boot_async
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.server import RECORDS, free_udp_port, serving
from integration.services import dns_upstream

CONFIG = """
dns-record = ["db.slirpnet.test=10.0.2.50"]
dns-timeout = 0.5

[namespace.failover]
listen = "unix:{tmp}/failover.sock"
dns-upstream = ["127.0.0.1:{closed}", "127.0.0.1:{good}"]

[namespace.dead]
listen = "unix:{tmp}/dead.sock"
dns-upstream = ["127.0.0.1:{closed}", "127.0.0.1:{silent}"]

[namespace.tcp]
listen = "unix:{tmp}/tcp.sock"
dns-upstream = ["127.0.0.1:{good}"]
"""

QUERY_ID = 0x4242


def tcp_query_script() -> str:
    """Send one query over TCP (RFC 1035 §4.2.2: a 2-byte length first) and print the reply
    as hex; busybox has no TCP resolver, so nc carries bytes that printf spells out."""
    query = bytes(DNS(id=QUERY_ID, rd=1, qd=DNSQR(qname="www.slirpnet.test")))
    message = len(query).to_bytes(2, "big") + query
    octal = "".join(f"\\{byte:03o}" for byte in message)
    # The sleep keeps nc's input open until the answer is in.
    return (
        f"(printf '{octal}'; sleep 1) | nc 10.0.2.3 53 | od -An -tx1 -v | tr -d ' \\n' >/tmp/r\n"
        'echo "TCP-REPLY $(cat /tmp/r)"\n'
    )


SCRIPTS = {
    "failover": "nslookup www.slirpnet.test\nnslookup db.slirpnet.test\n",
    "dead": "nslookup www.slirpnet.test\nnslookup db.slirpnet.test\n",
    "tcp": tcp_query_script(),
}


def tcp_reply(output: str) -> DNS:
    hex_reply = output.split("TCP-REPLY ", 1)[1].split("\n", 1)[0]
    data = bytes.fromhex(hex_reply)
    assert int.from_bytes(data[:2], "big") == len(data) - 2, output
    return DNS(data[2:])


async def test_failover_servfail_local_records_and_tcp(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    runs: dict[str, GuestRun] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        async with dns_upstream(RECORDS) as good:
            config = tmp_path / "slirpnet.toml"
            config.write_text(
                CONFIG.format(
                    tmp=tmp_path,
                    closed=free_udp_port(),
                    good=good.port,
                    silent=silent.getsockname()[1],
                )
            )
            async with serving(["--config", str(config)], tmp_path / "log", lines=3) as server:
                netdevs = {server.namespace(line): server.netdev(line) for line in range(3)}

                async def boot(name: str) -> None:
                    runs[name] = await boot_async(
                        guest_image, netdevs[name], SCRIPTS[name], timeout=90
                    )

                async with trio.open_nursery() as nursery:
                    for name in SCRIPTS:
                        nursery.start_soon(boot, name)
            silent.setblocking(False)
            silently_asked = silent.recv(512)  # raises if it never heard a thing
    log = server.stderr()
    for run in runs.values():
        assert run.rc == 0, run.output + log

    failover = runs["failover"].output
    assert "Name:\twww.slirpnet.test\nAddress: 192.0.2.10\n" in failover
    assert "Name:\tdb.slirpnet.test\nAddress: 10.0.2.50\n" in failover

    dead = runs["dead"].output
    assert "** server can't find www.slirpnet.test: SERVFAIL" in dead
    assert "Name:\tdb.slirpnet.test\nAddress: 10.0.2.50\n" in dead  # local: no upstream needed
    assert DNS(silently_asked).qd[0].qname == b"www.slirpnet.test."

    reply = tcp_reply(runs["tcp"].output)
    assert (reply.id, reply.qr, reply.rcode, reply.ancount) == (QUERY_ID, 1, 0, 1)
    assert reply.an[0].rdata == "192.0.2.10"

    # The good upstream heard the failover guest's names over UDP and the tcp guest's over TCP;
    # the local name never left slirpnet.
    asked = {(transport, name) for transport, name, qtype in good.queries if qtype == 1}
    assert asked == {("udp", "www.slirpnet.test"), ("tcp", "www.slirpnet.test")}
    server.assert_clean_exit()


async def dig(guest: LinuxGuest, *args: str) -> str:
    """dig's answer from the guest's namespace, one try, to the DNS address."""
    result = await trio.run_process(
        guest.command("dig", "@10.0.2.3", "+tries=1", "+time=5", *args),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    return output


def status(output: str) -> str:
    match = re.search(r"status: (\w+)", output)
    assert match, output
    return match.group(1)


def answers(output: str) -> list[str]:
    """The answer section's records as "TYPE DATA"."""
    section = output.partition(";; ANSWER SECTION:\n")[2].partition("\n\n")[0]
    return [" ".join(line.split()[3:]) for line in section.splitlines()]


async def test_dig_over_tcp_fails_over_and_edns_is_echoed(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed (Debian package bind9-dnsutils)")
    with socket.socket() as refusing:  # bound, never listening: connects are refused
        refusing.bind(("127.0.0.1", 0))
        async with dns_upstream(RECORDS) as good:
            nic = tmp_path / "nic.sock"
            args = [
                *("--listen", f"unixgram:{nic}"),
                *("--dns-upstream", f"127.0.0.1:{refusing.getsockname()[1]}"),
                *("--dns-upstream", f"127.0.0.1:{good.port}"),
                *("--dns-record", "db.slirpnet.test=10.0.2.50"),
                *("--dns-record", "db.slirpnet.test=fd00::50"),
            ]
            async with (
                serving(args, tmp_path / "slirpnet.log") as server,
                open_linux_guest(tmp_path / "guest", server=nic) as guest,
            ):
                over_tcp = await dig(guest, "+tcp", "www.slirpnet.test", "A")
                with_edns = await dig(guest, "+edns=0", "+dnssec", "db.slirpnet.test", "AAAA")
                without_edns = await dig(guest, "+noedns", "db.slirpnet.test", "A")
                nodata = await dig(guest, "+edns=0", "db.slirpnet.test", "MX")
                later = await dig(guest, "+edns=1", "+noednsnegotiation", "db.slirpnet.test")

    # The first upstream refused the connection; the second answered over TCP.
    assert (status(over_tcp), answers(over_tcp)) == ("NOERROR", ["A 192.0.2.10"]), over_tcp
    assert ("tcp", "www.slirpnet.test", 1) in good.queries

    # Local answers: our OPT record when the query had one, DO echoed (RFC 3225 §3), the
    # UDP size the link carries (the lease's MTU less IPv4 and UDP headers).
    assert (status(with_edns), answers(with_edns)) == ("NOERROR", ["AAAA fd00::50"])
    udp = guest.mtu - 28
    assert f"; EDNS: version: 0, flags: do; udp: {udp}\n" in with_edns, with_edns
    assert (status(without_edns), answers(without_edns)) == ("NOERROR", ["A 10.0.2.50"])
    assert "OPT PSEUDOSECTION" not in without_edns, without_edns
    assert (status(nodata), answers(nodata)) == ("NOERROR", [])  # NODATA, RFC 2308 §2.2
    assert f"; EDNS: version: 0, flags:; udp: {udp}\n" in nodata, nodata
    assert status(later) == "BADVERS" and "EDNS: version: 0" in later, later
    assert all(name != "db.slirpnet.test" for _, name, _ in good.queries)  # never left us
    server.assert_clean_exit()
