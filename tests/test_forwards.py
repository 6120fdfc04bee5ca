"""Forward specs in libslirp's hostfwd syntax, ranges included."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from slirpnet.core.forwards import Forward, parse_forwards

LOOPBACK = IPv4Address("127.0.0.1")


def test_libslirp_hostfwd_syntax() -> None:
    assert parse_forwards("tcp::2222-:22") == (Forward("tcp", LOOPBACK, 2222, None, 22),)
    (forward,) = parse_forwards("udp:0.0.0.0:5353-10.0.2.15:53")
    assert forward == Forward("udp", IPv4Address("0.0.0.0"), 5353, IPv4Address("10.0.2.15"), 53)
    assert str(forward) == "udp:0.0.0.0:5353-10.0.2.15:53"
    assert str(parse_forwards("tcp::2222-:22")[0]) == "tcp:127.0.0.1:2222-:22"


def test_ranges_match_one_to_one() -> None:
    forwards = parse_forwards("tcp::8000-8002-:9000-9002")
    assert [(f.host_port, f.guest_port) for f in forwards] == [
        (8000, 9000),
        (8001, 9001),
        (8002, 9002),
    ]
    from_one = parse_forwards("tcp::8000-8002-:80")
    assert [(f.host_port, f.guest_port) for f in from_one] == [(8000, 80), (8001, 81), (8002, 82)]
    assert len(parse_forwards("tcp::65535-65535-:65535")) == 1


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("sctp::1-:1", "is not tcp|udp"),
        ("tcp::2222:22", "is not tcp|udp"),
        ("tcp::0-:22", "not a port"),
        ("tcp::70000-:22", "not a port"),
        ("tcp::10-5-:22", "not a port"),
        ("tcp::8000-8002-:80-81", "one to one"),
        ("tcp::1-2-:65535", "one to one"),
        ("tcp:1.2.3:80-:80", "not an IPv4 address"),
        ("tcp:1.2.3.4:80-10.0.2.300:80", "not an IPv4 address"),
        ("tcp::1000-3000-:1000", "more than 1024 ports"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_forwards(spec)
