"""Flags and TOML files make the same config; every mistake names its key."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from slirpnet.cli import build_parser, config_from_args
from slirpnet.config import (
    Address,
    ConfigError,
    ServerConfig,
    load_file,
    with_default_listener,
)
from slirpnet.core.settings import VDE_MTU, StaticLease, Upstream


def from_flags(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_defaults_are_libslirps() -> None:
    (namespace,) = from_flags().namespaces
    settings = namespace.settings
    assert settings.network == IPv4Network("10.0.2.0/24")
    assert (settings.gateway, settings.dns, settings.dhcp_start) == (
        IPv4Address("10.0.2.2"),
        IPv4Address("10.0.2.3"),
        IPv4Address("10.0.2.15"),
    )
    assert settings.mtu == 65520
    assert settings.host_loopback and not settings.restrict
    assert settings.local_records().items() == [
        ("host.slirpnet.internal", (IPv4Address("10.0.2.2"), IPv6Address("fec0::2")))
    ]


def test_flags() -> None:
    (namespace,) = from_flags(
        "--listen",
        "unix:/run/a.sock",
        "--listen",
        "tcp:127.0.0.1:7000",
        "--connect",
        "unix:/run/qemu.sock",
        "--net",
        "192.168.76.0/24",
        "--dns-upstream",
        "127.0.0.1:5353",
        "--dns-upstream",
        "127.0.0.2",
        "--dns-upstream",
        "[::1]:5300",
        "--dns-upstream",
        "fd00::53",
        "--dns-record",
        "db.test=192.168.76.9",
        "--dns-record",
        "DB.test=fd00::9",
        "--search",
        "corp.test",
        "--static-lease",
        "52:54:00:00:00:01=192.168.76.50",
        "--no-host-loopback",
        "--restrict",
        "--max-flows",
        "64",
    ).namespaces
    assert namespace.listen == (
        Address("unix", path="/run/a.sock"),
        Address("tcp", host="127.0.0.1", port=7000),
    )
    assert namespace.connect == (Address("unix", path="/run/qemu.sock"),)
    settings = namespace.settings
    # A network alone gets libslirp's offsets inside it.
    assert (settings.gateway, settings.dns, settings.dhcp_start) == (
        IPv4Address("192.168.76.2"),
        IPv4Address("192.168.76.3"),
        IPv4Address("192.168.76.15"),
    )
    assert settings.dns_upstreams == (
        Upstream(IPv4Address("127.0.0.1"), 5353),
        Upstream(IPv4Address("127.0.0.2"), 53),
        Upstream(IPv6Address("::1"), 5300),
        Upstream(IPv6Address("fd00::53"), 53),
    )
    assert [str(upstream) for upstream in settings.dns_upstreams[2:]] == [
        "[::1]:5300",
        "[fd00::53]:53",
    ]
    assert settings.local_records().get("db.test") == (
        IPv4Address("192.168.76.9"),
        IPv6Address("fd00::9"),
    )
    assert settings.search == ("corp.test",)
    assert settings.static_leases == (
        StaticLease(bytes.fromhex("525400000001"), IPv4Address("192.168.76.50")),
    )
    assert not settings.host_loopback and settings.restrict
    assert settings.max_flows == 64


def test_ipv6_network_boot_and_host_name_flags(tmp_path: Path) -> None:
    (namespace,) = from_flags(
        "--net6",
        "fd00:9::/64",
        "--dns6",
        "fd00:9::53",
        "--tftp",
        str(tmp_path),
        "--bootfile",
        "http://10.0.2.2:8080/boot.ipxe",
        "--tftp-server-name",
        "boot.test",
        "--hostname",
        "guest",
        "--vm-hostname",
        "52:54:00:00:00:01=web",
        "--vm-hostname",
        "52:54:00:00:00:02 = db.lab.test",
        "--deny",
        "192.0.2.0/24",
        "--deny",
        "fd00:bad::/48",
    ).namespaces
    settings = namespace.settings
    assert settings.ipv6 is True
    # A network alone gets libslirp's ::2 for the gateway, as 10.0.2.2 in an IPv4 one.
    assert (settings.network6, settings.gateway6, settings.dns6) == (
        IPv6Network("fd00:9::/64"),
        IPv6Address("fd00:9::2"),
        IPv6Address("fd00:9::53"),
    )
    assert settings.tftp_root == str(tmp_path)
    assert settings.bootfile == "http://10.0.2.2:8080/boot.ipxe"
    assert (settings.tftp_server_name, settings.dhcp_hostname) == ("boot.test", "guest")
    assert settings.dhcp_hostnames == (
        (bytes.fromhex("525400000001"), "web"),
        (bytes.fromhex("525400000002"), "db.lab.test"),
    )
    assert settings.deny == (IPv4Network("192.0.2.0/24"), IPv6Network("fd00:bad::/48"))
    assert settings.denied(IPv6Address("fd00:bad::1")) and not settings.denied(
        IPv6Address("fd00:900::1")
    )


def test_no_ipv6_and_the_ipv6_defaults_are_libslirps() -> None:
    (namespace,) = from_flags("--no-ipv6").namespaces
    assert namespace.settings.ipv6 is False
    (default,) = from_flags().namespaces
    assert default.settings.ipv6 is True
    assert (default.settings.network6, default.settings.gateway6, default.settings.dns6) == (
        IPv6Network("fec0::/64"),
        IPv6Address("fec0::2"),
        IPv6Address("fec0::3"),
    )


def test_a_tftp_root_given_relative_is_kept_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "boot").mkdir()
    monkeypatch.chdir(tmp_path)
    (namespace,) = from_flags("--tftp", "boot", "--bootfile", "pxelinux.0").namespaces
    assert namespace.settings.tftp_root == str(tmp_path / "boot")
    assert namespace.settings.bootfile == "pxelinux.0"


@pytest.mark.parametrize(
    ("net", "gateway", "dns", "dhcp_start"),
    [
        # libslirp's addresses are the host part of 0.0.2.2, .3 and .15 (net/slirp.c).
        ("192.168.76.0/24", "192.168.76.2", "192.168.76.3", "192.168.76.15"),
        ("10.0.0.0/16", "10.0.2.2", "10.0.2.3", "10.0.2.15"),
        ("10.0.0.0/8", "10.0.2.2", "10.0.2.3", "10.0.2.15"),
        ("10.0.4.0/23", "10.0.4.2", "10.0.4.3", "10.0.4.15"),
        ("10.0.2.0/27", "10.0.2.2", "10.0.2.3", "10.0.2.15"),
    ],
)
def test_a_network_alone_gets_libslirps_addresses(
    net: str, gateway: str, dns: str, dhcp_start: str
) -> None:
    (namespace,) = from_flags("--net", net).namespaces
    settings = namespace.settings
    assert (str(settings.gateway), str(settings.dns), str(settings.dhcp_start)) == (
        gateway,
        dns,
        dhcp_start,
    )


def test_vde_on_stdio_defaults_to_mtu_1500() -> None:
    (namespace,) = from_flags("--stdio", "vde").namespaces
    assert namespace.stdio == "vde"
    assert namespace.settings.mtu == VDE_MTU


def test_no_listener_means_the_default_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    (namespace,) = with_default_listener(from_flags()).namespaces
    assert namespace.listen == (Address("unix", path="/run/user/1000/slirpnet.sock"),)


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--listen", "udp:1.2.3.4:5"], "listen"),
        (["--listen", "tcp:127.0.0.1:99999"], "listen"),
        (["--net", "10.0.2.0/33"], "net"),
        (["--gateway", "10.0.3.2"], "gateway"),
        (["--dns", "10.0.2.2"], "dns"),
        (["--mtu", "100"], "mtu"),
        (["--mtu", "big"], "mtu"),
        (["--dns-upstream", "resolver.test"], "dns-upstream"),
        (["--dns-upstream", "[::1]53"], "dns-upstream"),
        (["--dns-upstream", "[::1"], "dns-upstream"),
        (["--dns-upstream", "[::1]:"], "dns-upstream"),
        (["--dns-upstream", "127.0.0.1:53:53"], "dns-upstream"),
        (["--dns-record", "a.test=fd00::1::2"], "dns-record"),
        (["--dns-record", "noequals"], "dns-record"),
        (["--static-lease", "zz=10.0.2.9"], "static-lease"),
        (["--udp-idle-timeout", "-1"], "udp-idle-timeout"),
        (["--max-flows", "0"], "max-flows"),
        (["--max-flows", "many"], "max-flows"),
        (["--stdio", "serial"], "stdio"),
        (["--listen", "unix:/a", "--listen", "unix:/a"], "listen"),
        (["--isolate", "--forward", "tcp::2222-:22"], "forward"),
        (["--state-dir", "/dev/null"], "state-dir"),
        (["--net6", "fd00::/48"], "net6"),
        (["--net6", "10.0.2.0/24"], "net6"),
        (["--gateway6", "fd00::2"], "gateway6"),
        (["--gateway6", "fec0::2%eth0"], "gateway6"),
        (["--dns6", "10.0.2.3"], "dns6"),
        (["--dns6", "fec0::2"], "dns6"),
        (["--net6", "fd00::/64", "--dns6", "fec0::3"], "dns6"),
        (["--no-ipv6", "--net6", "fd00::/64"], "net6"),
        (["--no-ipv6", "--dns6", "fec0::9"], "dns6"),
        (["--tftp", "/nonexistent/tftp"], "tftp"),
        (["--tftp", "/dev/null"], "tftp"),
        (["--bootfile", ""], "bootfile"),
        (["--bootfile", "tftp://10.0.2.2/pxe"], "bootfile"),
        (["--bootfile", "http:///boot.ipxe"], "bootfile"),
        (["--bootfile", "x" * 256], "bootfile"),
        (["--bootfile", "pxe\nlinux"], "bootfile"),
        (["--tftp-server-name", "boot server"], "tftp-server-name"),
        (["--hostname", "vm_1"], "hostname"),
        (["--hostname", "vm-"], "hostname"),
        (["--hostname", "a" * 64], "hostname"),
        (["--vm-hostname", "web"], "vm-hostname"),
        (["--vm-hostname", "zz=web"], "vm-hostname"),
        (["--vm-hostname", "52:54:00:00:00:01=we b"], "vm-hostname"),
        (
            ["--vm-hostname", "52:54:00:00:00:01=a", "--vm-hostname", "52:54:00:00:00:01=b"],
            "vm-hostname",
        ),
        (["--deny", "fd00::/129"], "deny"),
        (["--deny", "somewhere"], "deny"),
        # A network with no room for libslirp's addresses: the network is what was said.
        (["--net", "10.0.2.0/31"], "net"),
    ],
)
def test_bad_flags_name_their_key(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_flags(*argv)
    assert info.value.key == key


def test_toml_with_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        """
log-level = "debug"
dns-upstream = ["127.0.0.1:5353"]
listen = ["unix:/run/default.sock"]

[namespace.lab]
listen = ["unix:/run/lab.sock", "unixgram:/run/lab.dgram"]
net = "10.9.0.0/24"
restrict = true
dns_record = ["printer.lab=10.9.0.200"]
max_flows = 100
"""
    )
    config = load_file(path)
    assert config.log_level == "debug"
    default, lab = config.namespaces
    assert default.name == "default"
    assert default.listen == (Address("unix", path="/run/default.sock"),)
    assert lab.name == "lab"
    assert lab.listen[1] == Address("unixgram", path="/run/lab.dgram")
    assert lab.settings.gateway == IPv4Address("10.9.0.2")
    assert lab.settings.restrict and not default.settings.restrict
    assert (lab.settings.max_flows, default.settings.max_flows) == (100, 16384)
    # Settings at the top are inherited; listeners are not.
    assert lab.settings.dns_upstreams == default.settings.dns_upstreams


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("mtu = 'x'", "mtu"),
        ("colour = 'blue'", "colour"),
        ("restrict = 'yes'", "restrict"),
        ("[namespace.a]\nisolate = 1", "namespace.a.isolate"),
        ("[namespace.a]\nisolate = true\nforward = 'tcp::22-:22'", "namespace.a.forward"),
        ("state-dir = '/dev/null'", "state-dir"),
        ("[namespace.a]\ngateway = '1.2.3.4'", "namespace.a.gateway"),
        ("[namespace.a]\nmax-flows = -5", "namespace.a.max-flows"),
        ("[namespace.a]\nstdio='vde'\n[namespace.b]\nstdio='qemu'", "stdio"),
        ("this is not toml", "config"),
        ("[namespace.a]\nnet6 = 'fd00::/56'", "namespace.a.net6"),
        ("no-ipv6 = 'yes'", "no-ipv6"),
        ("[namespace.a]\nvm-hostname = ['zz=web']", "namespace.a.vm-hostname"),
        ("[namespace.a]\nuser = 'net=10.0.9.0/24,smb=/srv'", "namespace.a.user.smb"),
        ("[namespace.a]\nuser = ['net=10.0.9.0/24']", "namespace.a.user"),
    ],
)
def test_bad_files_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.key == key


def test_flags_and_file_together_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        from_flags("--config", str(path), "--restrict")
    assert info.value.key == "config"


def test_top_level_settings_alone_make_no_namespace_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(
        """
dns-upstream = "127.0.0.1:5353"
[namespace.a]
listen = "unix:/run/a.sock"
[namespace.b]
listen = "unix:/run/b.sock"
"""
    )
    a, b = load_file(path).namespaces
    assert (a.name, b.name) == ("a", "b")
    assert a.settings.dns_upstreams == b.settings.dns_upstreams != ()


def test_a_bad_inherited_key_is_named_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("mtu = 1\n[namespace.a]\nlisten = 'unix:/run/a.sock'\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.key == "mtu"


def test_the_readmes_config_file_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    path = tmp_path / "readme.toml"
    path.write_text(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    web, lab = load_file(path).namespaces
    assert (web.name, lab.name) == ("web", "lab")
    assert web.settings.static_leases[0].address == IPv4Address("10.0.2.21")
    assert lab.listen[1] == Address("tcp", host="127.0.0.1", port=7001)
    assert lab.settings.gateway == IPv4Address("10.9.0.2") and lab.settings.restrict
    assert web.settings.dns_upstreams == lab.settings.dns_upstreams


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "static-leases = ['52:54:00:00:0a:01=10.0.2.21']",
            "static-leases: unknown key (did you mean static-lease?)",
        ),
        (
            "[namespace.a]\nlisten = 'unix:/a'\ndns_upstreams = '127.0.0.1'",
            "namespace.a.dns-upstreams: unknown key (did you mean dns-upstream?)",
        ),
        ("contrl = 'unix:/c'", "contrl: unknown key (did you mean control?)"),
        ("colour = 'blue'", "colour: unknown key"),
        (
            "vm-hostnames = ['52:54:00:00:00:01=web']",
            "vm-hostnames: unknown key (did you mean vm-hostname?)",
        ),
        ("net_6 = 'fd00::/64'", "net-6: unknown key (did you mean net6?)"),
        ("tftp_root = '/srv'", "tftp-root: unknown key (did you mean tftp?)"),
    ],
)
def test_a_near_miss_key_gets_a_did_you_mean(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "slip.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == message


def test_an_address_used_twice_names_the_namespace_that_has_it(tmp_path: Path) -> None:
    path = tmp_path / "twice.toml"
    path.write_text("[namespace.a]\nlisten = 'unix:/x'\n[namespace.b]\nlisten = 'unix:/x'\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == "listen: unix:/x is used by namespace a already"


@pytest.mark.parametrize("text", ["9464", ":9464", "tcp:9464", "localhost"])
def test_metrics_takes_host_and_port_only(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_flags("--metrics", text)
    assert str(info.value) == f"metrics: {text!r} is not HOST:PORT, like 127.0.0.1:9464"
    assert from_flags("--metrics", "127.0.0.1:9464").metrics == Address(
        "tcp", host="127.0.0.1", port=9464
    )


def test_the_control_socket_is_on_by_default_where_ctl_looks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    default = Address("unix", path="/run/user/1000/slirpnet-control.sock")
    config = from_flags()
    assert (config.control, config.control_optional) == (default, True)
    given = from_flags("--control", "unix:/run/c.sock")
    assert (given.control, given.control_optional) == (Address("unix", path="/run/c.sock"), False)
    assert from_flags("--control", "none").control is None
    # The same from a file: absent is the default, "none" is none.
    path = tmp_path / "c.toml"
    path.write_text("")
    assert (load_file(path).control, load_file(path).control_optional) == (default, True)
    path.write_text("control = 'none'")
    assert load_file(path).control is None
    # --control on the command line wins over the file's.
    assert from_flags("--config", str(path), "--control", "unix:/c").control == Address(
        "unix", path="/c"
    )


def test_a_pcap_directory_that_is_not_there_yet_is_fine_a_file_is_not(tmp_path: Path) -> None:
    assert from_flags("--pcap", str(tmp_path / "later")).pcap_dir == tmp_path / "later"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as info:
        from_flags("--pcap", str(tmp_path / "file"))
    assert info.value.key == "pcap"


def test_top_level_keys_take_underscores_too(tmp_path: Path) -> None:
    path = tmp_path / "underscores.toml"
    path.write_text("log_level = 'debug'\ncontrol = 'none'\nlisten = 'unix:/run/a.sock'\n")
    config = load_file(path)
    assert (config.log_level, config.control) == ("debug", None)


def test_isolate_and_the_state_dir_from_flags_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (default,) = from_flags("--isolate").namespaces
    assert default.isolate
    # slirpnet serve keeps leases unless told where: the default place.
    assert from_flags().state_dir == tmp_path / "xdg" / "slirpnet"
    assert from_flags("--state-dir", str(tmp_path / "s")).state_dir == tmp_path / "s"
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        f"state-dir = '{tmp_path / 'kept'}'\n"
        "[namespace.web]\nlisten = 'unix:/w.sock'\nisolate = true\n"
        "[namespace.lab]\nlisten = 'unix:/l.sock'\n"
    )
    config = load_file(path)
    assert config.state_dir == tmp_path / "kept"
    assert [(ns.name, ns.isolate) for ns in config.namespaces] == [("web", True), ("lab", False)]


def test_the_new_keys_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        f"""
no-ipv6 = true
[namespace.boot]
listen = "unix:/run/boot.sock"
no-ipv6 = false
net6 = "fd00:b::/64"
gateway6 = "fd00:b::1"
tftp = "{tmp_path}"
bootfile = "pxelinux.0"
tftp_server_name = "10.0.2.2"
hostname = "installer"
vm-hostname = ["52:54:00:00:00:01=web"]
deny = ["fd00:bad::/48", "192.0.2.0/24"]
[namespace.plain]
listen = "unix:/run/plain.sock"
"""
    )
    boot, plain = load_file(path).namespaces
    settings = boot.settings
    assert settings.ipv6 and not plain.settings.ipv6  # a namespace's own wins, as ever
    assert (settings.network6, settings.gateway6, settings.dns6) == (
        IPv6Network("fd00:b::/64"),
        IPv6Address("fd00:b::1"),
        IPv6Address("fd00:b::3"),
    )
    assert (settings.tftp_root, settings.bootfile) == (str(tmp_path), "pxelinux.0")
    assert (settings.tftp_server_name, settings.dhcp_hostname) == ("10.0.2.2", "installer")
    assert settings.dhcp_hostnames == ((bytes.fromhex("525400000001"), "web"),)
    assert settings.deny == (IPv6Network("fd00:bad::/48"), IPv4Network("192.0.2.0/24"))
