"""``--user``: QEMU's ``-netdev user`` option string, read as QEMU reads it and taken
through the same keys, checks and messages as the flags."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from slirpnet.cli import build_parser, config_from_args, main
from slirpnet.config import ConfigError, NamespaceConfig, load_file, namespace_from_values
from slirpnet.core.forwards import Forward
from slirpnet.netdevuser import OptionError, split, translate

LOOPBACK = IPv4Address("127.0.0.1")


def from_user(text: str, *argv: str) -> NamespaceConfig:
    (namespace,) = config_from_args(
        build_parser().parse_args(["serve", "--user", text, *argv])
    ).namespaces
    return namespace


def test_a_string_copied_from_a_qemu_command_line() -> None:
    namespace = from_user(
        "user,id=n0,net=192.168.76.0/24,dhcpstart=192.168.76.9,hostfwd=tcp::2222-:22,"
        "dnssearch=example.test,ipv6=off"
    )
    settings = namespace.settings
    assert settings.network == IPv4Network("192.168.76.0/24")
    assert (settings.gateway, settings.dns, settings.dhcp_start) == (
        IPv4Address("192.168.76.2"),
        IPv4Address("192.168.76.3"),
        IPv4Address("192.168.76.9"),
    )
    assert settings.search == ("example.test",)
    assert settings.ipv6 is False
    assert not settings.restrict and settings.host_loopback
    assert namespace.forwards == (Forward("tcp", LOOPBACK, 2222, None, 22),)


# -- QemuOpts, as util/qemu-option.c reads it ------------------------------------------


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("", []),
        ("user", [("type", "user")]),
        ("user,id=n0", [("type", "user"), ("id", "n0")]),
        ("net=10.0.9.0/24", [("net", "10.0.9.0/24")]),  # no type: user is implied
        ("type=user,id=n0", [("type", "user"), ("id", "n0")]),
        # ",," is a comma inside a value; a lone one ends it.
        ("bootfile=a,,b,,,tftp=/t", [("bootfile", "a,b,"), ("tftp", "/t")]),
        ("dnssearch=a.test,,", [("dnssearch", "a.test,")]),
        ("hostname=x,", [("hostname", "x")]),  # a trailing comma ends the last item
        ("net=", [("net", "")]),
        ("bootfile=a=b", [("bootfile", "a=b")]),  # the first "=" ends the name
        # A boolean alone is on, "no" before it off (QEMU's deprecated short form).
        ("user,restrict,noipv6", [("type", "user"), ("restrict", "on"), ("ipv6", "off")]),
        # The implied first item is read as a value, escapes and all.
        ("user,,x", [("type", "user,x")]),
    ],
)
def test_the_string_is_split_as_qemu_splits_it(text: str, items: list[tuple[str, str]]) -> None:
    assert split(text) == items


@pytest.mark.parametrize(
    ("text", "option"),
    [("user,hostfwd", "hostfwd"), ("user,restrict,,net=x", ""), ("user,restrict,,", "")],
)
def test_an_item_without_a_value_is_only_a_boolean(text: str, option: str) -> None:
    with pytest.raises(OptionError) as info:
        split(text)
    assert info.value.option == option


# -- every option, translated: the mapping is data ---------------------------------------


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("net=10.0.9.0/24", {"net": ("net", "10.0.9.0/24")}),
        ("ip=10.0.9.0", {"net": ("ip", "10.0.9.0/24")}),  # QEMU's legacy spelling, a /24
        ("host=10.0.2.4", {"gateway": ("host", "10.0.2.4")}),
        ("dns=10.0.2.5", {"dns": ("dns", "10.0.2.5")}),
        ("dhcpstart=10.0.2.30", {"dhcp-start": ("dhcpstart", "10.0.2.30")}),
        ("domainname=corp.test", {"domain": ("domainname", "corp.test")}),
        ("hostname=vm1", {"hostname": ("hostname", "vm1")}),
        ("tftp=/srv/tftp", {"tftp": ("tftp", "/srv/tftp")}),
        ("bootfile=pxelinux.0", {"bootfile": ("bootfile", "pxelinux.0")}),
        ("tftp-server-name=boot.test", {"tftp-server-name": ("tftp-server-name", "boot.test")}),
        ("ipv6-host=fec0::20", {"gateway6": ("ipv6-host", "fec0::20")}),
        ("ipv6-dns=fec0::30", {"dns6": ("ipv6-dns", "fec0::30")}),
        ("mtu=1500", {"mtu": ("mtu", "1500")}),
        ("restrict=on", {"restrict": ("restrict", True)}),
        ("restrict=no", {"restrict": ("restrict", False)}),
        ("restrict=yes", {"restrict": ("restrict", True)}),
        ("hostfwd=tcp::2222-:22", {"forward": ("hostfwd", ["tcp::2222-:22"])}),
        ("hostfwd=::2222-:22", {"forward": ("hostfwd", ["tcp::2222-:22"])}),  # "" is TCP
        (
            "hostfwd=udp:127.0.0.2:5353-10.0.2.15:53,hostfwd=:127.0.0.1:80-:8080",
            {"forward": ("hostfwd", ["udp:127.0.0.2:5353-10.0.2.15:53", "tcp:127.0.0.1:80-:8080"])},
        ),
        # guestfwd's value goes as it is to slirpnet's key of the same name.
        (
            "guestfwd=tcp:10.0.2.100:1234-cmd:nc 127.0.0.1 22",
            {"guestfwd": ("guestfwd", ["tcp:10.0.2.100:1234-cmd:nc 127.0.0.1 22"])},
        ),
        ("dnssearch=a.test,dnssearch=b.test", {"search": ("dnssearch", ["a.test", "b.test"])}),
        ("ipv6-net=fd00:1::/64", {"net6": ("ipv6-net", "fd00:1::/64")}),
        ("ipv6-net=fd00:1::", {"net6": ("ipv6-net", "fd00:1::/64")}),  # a /64 unless told
        ("ipv6-prefix=fd00:2::", {"net6": ("ipv6-prefix", "fd00:2::/64")}),
        ("ipv6-prefix=fd00:2::,ipv6-prefixlen=64", {"net6": ("ipv6-prefix", "fd00:2::/64")}),
        ("ipv6-prefixlen=64", {"net6": ("ipv6-prefixlen", "fec0::/64")}),
        # net/net.c turns ipv6-net into the other two: it wins over them.
        ("ipv6-net=fd00:3::/64,ipv6-prefix=fd00:2::", {"net6": ("ipv6-net", "fd00:3::/64")}),
        # Both families unless one is said; ipv4=on alone means IPv4 only.
        ("ipv6=off", {"no-ipv6": ("ipv6", True)}),
        ("ipv4=on", {"no-ipv6": ("ipv4", True)}),
        ("ipv4=on,ipv6=off", {"no-ipv6": ("ipv6", True)}),
        ("ipv4=on,ipv6=on", {}),
        ("user,id=n0", {}),
        ("net=10.0.9.0/24,net=10.0.8.0/24", {"net": ("net", "10.0.8.0/24")}),  # the last wins
    ],
)
def test_each_option_becomes_slirpnet_s_key(text: str, keys: dict[str, tuple[str, object]]) -> None:
    assert translate(text) == keys


@pytest.mark.parametrize(
    ("text", "network", "gateway"),
    [
        # Without a mask, QEMU takes the class's (net/slirp.c); libslirp's addresses are the
        # host part of 0.0.2.2, so the gateway of 10.0.0.0/8 is 10.0.2.2.
        ("net=10.0.2.0", "10.0.0.0/8", "10.0.2.2"),
        ("net=172.20.0.0", "172.16.0.0/12", "172.16.2.2"),
        ("net=192.168.76.0", "192.168.0.0/16", "192.168.2.2"),
        ("net=130.1.0.0", "130.1.0.0/16", "130.1.2.2"),
        ("net=198.18.0.0", "198.18.0.0/15", "198.18.2.2"),
        ("net=10.0.9.0/255.255.255.0", "10.0.9.0/24", "10.0.9.2"),
        ("net=10.0.9.7/24", "10.0.9.0/24", "10.0.9.2"),
        ("ip=10.0.9.0", "10.0.9.0/24", "10.0.9.2"),
    ],
)
def test_a_network_is_the_one_qemu_makes(text: str, network: str, gateway: str) -> None:
    settings = from_user(text).settings
    assert settings.network == IPv4Network(network)
    assert settings.gateway == IPv4Address(gateway)
    assert int(settings.dns) == int(settings.gateway) + 1
    assert int(settings.dhcp_start) == int(settings.gateway) + 13


def test_every_option_reaches_the_settings(tmp_path: Path) -> None:
    namespace = from_user(
        f"user,net=10.0.9.0/24,host=10.0.9.4,dns=10.0.9.5,dhcpstart=10.0.9.40,"
        f"domainname=corp.test,hostname=vm1,tftp={tmp_path},bootfile=boot/pxe,,1.0,"
        "tftp-server-name=boot.test,ipv6-net=fd00:9::/64,ipv6-host=fd00:9::4,"
        "ipv6-dns=fd00:9::5,mtu=1500,restrict=on,dnssearch=a.test,dnssearch=b.test,"
        "hostfwd=udp:127.0.0.2:5353-10.0.9.40:53,hostfwd=::2222-:22,ipv4=on,ipv6=on"
    )
    settings = namespace.settings
    assert (settings.network, settings.gateway, settings.dns, settings.dhcp_start) == (
        IPv4Network("10.0.9.0/24"),
        IPv4Address("10.0.9.4"),
        IPv4Address("10.0.9.5"),
        IPv4Address("10.0.9.40"),
    )
    assert (settings.domain, settings.dhcp_hostname) == ("corp.test", "vm1")
    assert (settings.tftp_root, settings.bootfile) == (str(tmp_path), "boot/pxe,1.0")
    assert settings.tftp_server_name == "boot.test"
    assert settings.ipv6 is True
    assert (settings.network6, settings.gateway6, settings.dns6) == (
        IPv6Network("fd00:9::/64"),
        IPv6Address("fd00:9::4"),
        IPv6Address("fd00:9::5"),
    )
    assert settings.mtu == 1500 and settings.restrict
    assert settings.search == ("a.test", "b.test")
    assert namespace.forwards == (
        Forward("udp", IPv4Address("127.0.0.2"), 5353, IPv4Address("10.0.9.40"), 53),
        Forward("tcp", LOOPBACK, 2222, None, 22),
    )


def test_an_ipv6_prefix_alone_gets_libslirp_s_addresses_in_it() -> None:
    settings = from_user("ipv6-prefix=fd00:7::").settings
    assert (settings.network6, settings.gateway6, settings.dns6) == (
        IPv6Network("fd00:7::/64"),
        IPv6Address("fd00:7::2"),
        IPv6Address("fd00:7::3"),
    )


# -- mistakes: one line naming the option ------------------------------------------------

# NetdevUserOptions in QEMU's qapi/net.json, and ipv6-net (net/net.c).
QEMU_USER_OPTIONS = (
    "hostname",
    "restrict",
    "ipv4",
    "ipv6",
    "ip",
    "net",
    "host",
    "tftp",
    "bootfile",
    "dhcpstart",
    "dns",
    "dnssearch",
    "domainname",
    "ipv6-prefix",
    "ipv6-prefixlen",
    "ipv6-host",
    "ipv6-dns",
    "smb",
    "smbserver",
    "hostfwd",
    "guestfwd",
    "tftp-server-name",
    "ipv6-net",
    "id",
    "type",
)


@pytest.mark.parametrize("option", QEMU_USER_OPTIONS)
def test_every_qemu_option_is_known_taken_or_refused_for_what_it_is(option: str) -> None:
    try:
        translate(f"{option}=x")
    except OptionError as error:
        assert error.option == option
        assert "not an option" not in error.message, error


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("user,smb=/srv/share", "user.smb: slirpnet has no SMB server"),
        ("smbserver=10.0.2.4", "user.smbserver: slirpnet has no SMB server"),
        ("vnameserver=10.0.2.3", "user.vnameserver: not an option of -netdev user"),
        ("hostfw=tcp::1-:2", "user.hostfw: not an option of -netdev user (did you mean hostfwd?)"),
        ("tap,ifname=tap0", "user.type: 'tap' is not user: only -netdev user's options are taken"),
        ("ipv4=off", "user.ipv4: slirpnet always serves IPv4"),
        (
            "ipv6=on",
            "user.ipv6: ipv6=on without ipv4=on is IPv6 only to QEMU; slirpnet always serves IPv4",
        ),
        ("restrict=maybe", "user.restrict: 'maybe' is not on or off"),
        (
            "hostfwd=unix:/tmp/s-:22",
            "user.hostfwd: slirpnet has no forwards from a host unix socket",
        ),
        (
            "hostfwd=2222-22",
            "user.hostfwd: '2222-22' is not [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT",
        ),
        ("hostfwd=sctp::1-:2", "user.hostfwd: 'sctp::1-:2' is not tcp|udp:"),
        ("hostfwd=tcp::2222-10.0.3.9:22", "user.hostfwd: tcp:127.0.0.1:2222-10.0.3.9:22: "),
        ("net=10.0.2.0/33", "user.net: '10.0.2.0/33' is not an IPv4 network"),
        ("ip=10.0.2", "user.ip: '10.0.2/24' is not an IPv4 network"),
        ("host=10.0.3.2", "user.host: 10.0.3.2 is not a host address of 10.0.2.0/24"),
        ("dns=10.0.2.2", "user.dns: 10.0.2.2 is the gateway's address too"),
        ("dhcpstart=10.0.3.15", "user.dhcpstart: 10.0.3.15 is not a host address of 10.0.2.0/24"),
        ("domainname=-x", "user.domainname: '-x' is not a domain name"),
        ("hostname=vm_1", "user.hostname: 'vm_1' is not a host name"),
        ("tftp=/nonexistent/tftp", "user.tftp: '/nonexistent/tftp' is not a directory"),
        ("bootfile=ftp://h/f", "user.bootfile: 'ftp://h/f': only http:// and https:// URLs"),
        ("dnssearch=a..test", "user.dnssearch: 'a..test' is not a domain name"),
        ("mtu=100", "user.mtu: 100 is outside 576..65520"),
        ("ipv6-net=fd00::/48", "user.ipv6-net: fd00::/48 is not a /64, which SLAAC needs"),
        ("ipv6-prefixlen=56", "user.ipv6-prefixlen: fec0::/56 is not a /64"),
        ("ipv6-prefix=fd00::/64", "user.ipv6-prefix: 'fd00::/64/64' is not an IPv6 network"),
        ("ipv6-host=fd00::2", "user.ipv6-host: fd00::2 is not a host address of fec0::/64"),
        ("ipv6-dns=nowhere", "user.ipv6-dns: 'nowhere' is not an IPv6 address"),
        ("ipv6=off,ipv6-dns=fec0::9", "user.ipv6-dns: given, but IPv6 is off (user.ipv6)"),
        ("net=10.0.2.0/24,,x", "user.net: '10.0.2.0/24,x' is not an IPv4 network"),
        ("user,restrict,,net=10.0.2.0/24", "user: an empty option (a lone comma too many?)"),
    ],
)
def test_a_mistake_is_one_line_naming_the_option(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_user(text)
    assert str(info.value).startswith(line), str(info.value)
    assert "\n" not in str(info.value)


def test_a_mistake_from_the_command_line_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--user", "user,id=n0,net=10.0.9.0/24,smb=/srv"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "slirpnet: error: user.smb: slirpnet has no SMB server\n"


# -- with other flags, and in the file ---------------------------------------------------


def test_flags_add_to_the_string_lists_add_up() -> None:
    namespace = from_user(
        "net=10.0.9.0/24,hostfwd=tcp::2222-:22,dnssearch=a.test",
        "--forward",
        "tcp::8080-:80",
        "--search",
        "b.test",
        "--mtu",
        "1500",
        "--deny",
        "fd00:bad::/48",
    )
    assert [forward.host_port for forward in namespace.forwards] == [2222, 8080]
    assert namespace.settings.search == ("a.test", "b.test")
    assert namespace.settings.mtu == 1500
    assert namespace.settings.deny == (IPv6Network("fd00:bad::/48"),)


@pytest.mark.parametrize(
    ("text", "argv", "line"),
    [
        (
            "net=10.0.9.0/24",
            ["--net", "10.0.8.0/24"],
            "user.net: sets net, which is given on its own too: say it once",
        ),
        (
            "host=10.0.2.4",
            ["--gateway", "10.0.2.4"],
            "user.host: sets gateway, which is given on its own too: say it once",
        ),
        (
            "restrict=off",
            ["--restrict"],
            "user.restrict: sets restrict, which is given on its own too: say it once",
        ),
        (
            "ipv6=off",
            ["--no-ipv6"],
            "user.ipv6: sets no-ipv6, which is given on its own too: say it once",
        ),
        # A forward's host port given by both is still given twice.
        (
            "hostfwd=tcp::2222-:22",
            ["--forward", "tcp::2222-:23"],
            "forward: tcp:127.0.0.1:2222-:23: host port 2222 is forwarded twice",
        ),
    ],
)
def test_a_setting_given_both_ways_is_an_error(text: str, argv: list[str], line: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_user(text, *argv)
    assert str(info.value) == line


def test_isolate_with_a_hostfwd_names_the_hostfwd() -> None:
    with pytest.raises(ConfigError) as info:
        from_user("hostfwd=tcp::2222-:22", "--isolate")
    assert info.value.key == "user.hostfwd"


def test_a_namespace_of_the_file_takes_a_user_string(tmp_path: Path) -> None:
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        """
[namespace.lab]
listen = "unix:/run/lab.sock"
user = "user,id=n0,net=10.9.0.0/24,hostfwd=tcp::2222-:22,restrict=on"
max-flows = 100
"""
    )
    (lab,) = load_file(path).namespaces
    assert lab.settings.network == IPv4Network("10.9.0.0/24") and lab.settings.restrict
    assert lab.forwards == (Forward("tcp", LOOPBACK, 2222, None, 22),)
    path.write_text("[namespace.lab]\nlisten = 'unix:/l'\nuser = 'net=10.9.0.0/24,smb=/x'\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == "namespace.lab.user.smb: slirpnet has no SMB server"


def test_the_same_machinery_as_the_keys() -> None:
    """``--user`` and the keys it stands for make the same namespace."""
    text = "net=10.0.9.0/24,host=10.0.9.4,hostfwd=tcp::2222-:22,dnssearch=a.test,ipv4=on"
    keys = {"net": "10.0.9.0/24", "gateway": "10.0.9.4", "forward": ["tcp::2222-:22"]}
    assert from_user(text) == namespace_from_values(
        "default", {**keys, "search": ["a.test"], "no-ipv6": True}
    )
