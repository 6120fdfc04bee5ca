"""Server configuration: from command-line flags or a TOML file, with the same keys.

A config is a set of namespaces, each with its listeners and its network
settings.  Flags describe one namespace, ``default``; a file's top-level keys
describe ``default`` too (and are inherited by the others), and each
``[namespace.NAME]`` table describes another namespace.  Where there are tables,
``default`` exists only if the top level gives it a listener of its own.

Every problem is a ``ConfigError`` naming the key, so the command line can say
in one line what is wrong (and exit 2).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from attrs import evolve, frozen

from slirpnet.core import guestfwd
from slirpnet.core.forwards import Forward, parse_forwards
from slirpnet.core.settings import VDE_MTU, NetworkSettings, StaticLease, Upstream
from slirpnet.netdevuser import OptionError, translate
from slirpnet.wire.ethernet import format_mac, parse_mac

DEFAULT_NAMESPACE = "default"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def unknown(word: str, known: Sequence[str], what: str) -> str:
    """``unknown key``, with the nearest known one when ``word`` looks like a slip of it."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"unknown {what}" + (f" (did you mean {close[0]}?)" if close else "")


@frozen
class Address:
    """Where to listen or connect: ``unix:PATH``, ``tcp:HOST:PORT`` or ``unixgram:PATH``."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else f"{self.kind}:{self.host}:{self.port}"


@frozen
class NamespaceConfig:
    name: str
    settings: NetworkSettings
    listen: tuple[Address, ...] = ()
    connect: tuple[Address, ...] = ()
    stdio: str | None = None  # "qemu" or "vde": one VM on stdin/stdout
    forwards: tuple[Forward, ...] = ()
    socket_mode: int = 0o600  # of the unix sockets made for ``listen``: the user's own
    isolate: bool = False  # each VM a network of its own, as with -netdev user


@frozen
class ServerConfig:
    namespaces: tuple[NamespaceConfig, ...]
    log_level: str = "info"
    log_format: str = "text"
    control: Address | None = None  # unix:PATH of the control API
    # Not asked for (the default place): if a running server holds it, serve without.
    control_optional: bool = False
    metrics: Address | None = None  # tcp:HOST:PORT of the Prometheus endpoint
    pcap_dir: Path | None = None  # every VM captured to a file here
    state_dir: Path | None = None  # leases kept over a restart, a file per namespace; None: not


# -- one parser per key, shared by flags and the file -----------------------------------


def parse_address(text: str, kinds: tuple[str, ...], key: str) -> Address:
    kind, _, rest = text.partition(":")
    if kind not in kinds or not rest:
        raise ConfigError(key, f"{text!r} is not one of {', '.join(k + ':...' for k in kinds)}")
    if kind in ("unix", "unixgram"):
        return Address(kind, path=rest)
    host, _, port = rest.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return Address(kind, host=host, port=_port(port, key))


def _port(text: str, key: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(key, f"{text!r} is not a port number")
    return int(text)


def _address(text: str, key: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv4 address") from None


def _network(text: str, key: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv4 network like 10.0.2.0/24") from None


def _network_any(text: str, key: str) -> IPv4Network | IPv6Network:
    try:
        return IPv4Network(text, strict=False)
    except ValueError:
        pass
    try:
        return IPv6Network(text, strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a network like 10.9.0.0/24 or fd00::/64") from None


def _address6(text: str, key: str) -> IPv6Address:
    try:
        address = IPv6Address(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv6 address") from None
    if address.scope_id:
        raise ConfigError(key, f"{text!r}: the guests' network has no zones (%)")
    return address


def _network6(text: str, key: str) -> IPv6Network:
    """The guests' IPv6 network; that it is a /64 the settings check (SLAAC needs it)."""
    try:
        return IPv6Network(text, strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv6 network like fd00::/64") from None


def _ip(text: str, key: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_upstream(text: str, key: str = "dns-upstream") -> Upstream:
    """``HOST[:PORT]``, an IPv6 host in brackets when a port follows (``[::1]:53``)."""
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            raise ConfigError(key, f"{text!r} is not HOST[:PORT], like [::1]:53")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    return Upstream(_ip(host, key), _port(port, key))


_NAME = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")


def _domain(text: str, key: str) -> str:
    if not _NAME.match(text):
        raise ConfigError(key, f"{text!r} is not a domain name")
    return text.rstrip(".")


def parse_record(text: str, key: str = "dns-record") -> tuple[str, IPv4Address | IPv6Address]:
    """``NAME=ADDRESS``: an A record for an IPv4 address, an AAAA record for an IPv6 one."""
    name, equals, address = text.partition("=")
    if not equals:
        raise ConfigError(key, f"{text!r} is not NAME=ADDRESS")
    return _domain(name.strip(), key), _ip(address.strip(), key)


# RFC 1123 §2.1: letters, digits and hyphens, 63 to a label; 253 in all (RFC 1035 §2.3.4).
_HOST_NAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _host_name(text: str, key: str) -> str:
    if len(text) > 253 or not _HOST_NAME.match(text):
        raise ConfigError(key, f"{text!r} is not a host name")
    return text


def _vm_host_name(text: str, key: str) -> tuple[bytes, str]:
    """``MAC=NAME``: the host name DHCP gives that one guest (option 12)."""
    mac, equals, name = text.partition("=")
    try:
        mac_bytes = parse_mac(mac.strip())
    except ValueError:
        raise ConfigError(key, f"{text!r} is not MAC=NAME") from None
    if not equals:
        raise ConfigError(key, f"{text!r} is not MAC=NAME")
    return mac_bytes, _host_name(name.strip(), key)


def _tftp_root(text: str, key: str) -> str:
    """A directory the TFTP server reads, and never writes."""
    if not os.path.isdir(text):
        raise ConfigError(key, f"{text!r} is not a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise ConfigError(key, f"{text!r} cannot be read")
    return os.path.abspath(text)


# DHCP carries the boot file name in option 67, at most 255 bytes (RFC 2132 §9.5).
_MAX_BOOTFILE = 255


def _bootfile(text: str, key: str) -> str:
    """A path under the TFTP root, or an http:// or https:// URL (iPXE fetches those)."""
    if not text or not text.isprintable() or len(text.encode()) > _MAX_BOOTFILE:
        raise ConfigError(key, f"{text!r} is not a file name of 1 to {_MAX_BOOTFILE} characters")
    scheme, colon_slashes, rest = text.partition("://")
    if colon_slashes and scheme.lower() not in ("http", "https"):
        raise ConfigError(key, f"{text!r}: only http:// and https:// URLs, or a path")
    if colon_slashes and not rest.partition("/")[0]:
        raise ConfigError(key, f"{text!r} is a URL without a host")
    return text


def _static_lease(text: str, key: str) -> StaticLease:
    mac, equals, address = text.partition("=")
    try:
        mac_bytes = parse_mac(mac.strip())
    except ValueError:
        raise ConfigError(key, f"{text!r} is not MAC=IPV4") from None
    if not equals:
        raise ConfigError(key, f"{text!r} is not MAC=IPV4")
    return StaticLease(mac_bytes, _address(address.strip(), key))


def _int(text: str, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a whole number") from None


def _socket_mode(text: str, key: str) -> int:
    """An octal mode like ``0660``: who besides the owner may plug a VM in."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an octal mode like 0660") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(key, f"{text!r} is not a permission mode (0 to 0777)")
    if mode & 0o600 != 0o600:
        raise ConfigError(key, f"{text!r} would lock out the server's own user")
    return mode


def _seconds(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigError(key, "must be more than 0 seconds")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(text: str, key: str) -> str:
        if text not in choices:
            raise ConfigError(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def parse_forward(text: str, key: str = "forward") -> tuple[Forward, ...]:
    """One spec's forwards (a range gives several)."""
    try:
        return parse_forwards(text)
    except ValueError as error:
        raise ConfigError(key, str(error)) from None


def parse_guestfwd(text: str, key: str = "guestfwd") -> guestfwd.GuestForward:
    try:
        return guestfwd.parse_guestfwd(text)
    except ValueError as error:
        raise ConfigError(key, str(error)) from None


# Keys of a namespace: name -> (parser of one value, repeatable).  The file uses the
# same names as the flags; underscores are accepted for dashes.
_SCALAR: dict[str, Callable[[str, str], Any]] = {
    "net": _network,
    "gateway": _address,
    "dns": _address,
    "dhcp-start": _address,
    "mtu": _int,
    "lease-time": _int,
    "domain": _domain,
    "udp-idle-timeout": _seconds,
    "dns-timeout": _seconds,
    "max-flows": _int,
    "max-connecting": _int,
    "max-leases": _int,
    "socket-mode": _socket_mode,
    "stdio": _choice(("qemu", "vde")),
    "net6": _network6,
    "gateway6": _address6,
    "dns6": _address6,
    "tftp": _tftp_root,
    "bootfile": _bootfile,
    "tftp-server-name": _host_name,
    "hostname": _host_name,
}
_LISTS: dict[str, Callable[[str, str], Any]] = {
    "forward": parse_forward,
    "guestfwd": parse_guestfwd,
    "listen": lambda text, key: parse_address(text, ("unix", "tcp", "unixgram"), key),
    "connect": lambda text, key: parse_address(text, ("unix", "tcp"), key),
    "dns-upstream": parse_upstream,
    "dns-record": parse_record,
    "search": _domain,
    "static-lease": _static_lease,
    "deny": _network_any,
    "vm-hostname": _vm_host_name,
}
_FLAGS = ("no-host-loopback", "restrict", "isolate", "no-ipv6")
# QEMU's -netdev user option string, translated into the keys above (netdevuser.py).
USER = "user"
NAMESPACE_KEYS = (*_SCALAR, *_LISTS, *_FLAGS, USER)


def parse_metrics(text: str, key: str = "metrics") -> Address:
    """``HOST:PORT`` of the metrics endpoint: the host is said, for it decides who may scrape."""
    host, colon, port = text.removeprefix("tcp:").rpartition(":")
    if not colon or not host.strip("[]"):
        raise ConfigError(key, f"{text!r} is not HOST:PORT, like 127.0.0.1:9464")
    return parse_address(f"tcp:{host}:{port}", ("tcp",), key)


# ``--control none`` (``control = "none"``): no control API at all.
NO_CONTROL = ("none", "off")


def parse_control(text: str, key: str = "control") -> Address | None:
    if text in NO_CONTROL:
        return None
    return parse_address(text, ("unix",), key)


def parse_pcap_dir(text: str, key: str = "pcap") -> Path:
    """A directory for captures; made (owner-only) at start when missing."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, f"{text!r} is not a directory")
    return path


def parse_state_dir(text: str, key: str = "state-dir") -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, f"{text!r} is not a directory")
    return path


# Keys of the server as a whole, outside any namespace.
_SERVER_KEYS: dict[str, Callable[[str, str], Any]] = {
    "control": parse_control,
    "metrics": parse_metrics,
    "pcap": parse_pcap_dir,
    "state-dir": parse_state_dir,
}
_SETTINGS_FIELDS = {
    "net": "network",
    "gateway": "gateway",
    "dns": "dns",
    "dhcp-start": "dhcp_start",
    "mtu": "mtu",
    "lease-time": "lease_time",
    "domain": "domain",
    "udp-idle-timeout": "udp_idle_timeout",
    "dns-timeout": "dns_timeout",
    "max-flows": "max_flows",
    "max-connecting": "max_connecting",
    "max-leases": "max_leases",
    "deny": "deny",
    "dns-upstream": "dns_upstreams",
    "dns-record": "dns_records",
    "search": "search",
    "static-lease": "static_leases",
    "restrict": "restrict",
    "net6": "network6",
    "gateway6": "gateway6",
    "dns6": "dns6",
    "tftp": "tftp_root",
    "bootfile": "bootfile",
    "tftp-server-name": "tftp_server_name",
    "hostname": "dhcp_hostname",
    "vm-hostname": "dhcp_hostnames",
    "guestfwd": "guest_forwards",
}


def namespace_from_values(
    name: str, values: Mapping[str, Any], where: str = "", *, also_known: Sequence[str] = ()
) -> NamespaceConfig:
    """A namespace from parsed key/values: strings (or lists of them) and booleans.

    ``also_known`` are keys valid where these came from but not here, for "did you mean".
    """
    parsed: dict[str, Any] = {}
    labels: dict[str, str] = {}  # what an error about a key names: the key, or a user option
    forwards: list[tuple[str, tuple[Forward, ...]]] = []  # each spec, with its label
    for key, value, label in _entries(values, where):
        labels.setdefault(key, label)
        if key in _SCALAR:
            parsed[key] = _SCALAR[key](_text(value, label), label)
        elif key in _LISTS:
            items = value if isinstance(value, list) else [value]
            parsed_items = tuple(_LISTS[key](_text(item, label), label) for item in items)
            parsed[key] = parsed.get(key, ()) + parsed_items  # a flag's and user's add up
            if key == "forward":
                forwards += [(label, spec) for spec in parsed_items]
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(label, f"{value!r} is not true or false")
            parsed[key] = value
        else:
            raise ConfigError(label, unknown(key, [*NAMESPACE_KEYS, *also_known], "key"))
    fields = {_SETTINGS_FIELDS[k]: v for k, v in parsed.items() if k in _SETTINGS_FIELDS}
    fields["host_loopback"] = not parsed.get("no-host-loopback", False)
    fields["ipv6"] = not parsed.get("no-ipv6", False)
    _addresses_within_networks(fields, labels)
    _ipv6_said_once(parsed, labels)
    _one_host_name_per_mac(parsed.get("vm-hostname", ()), labels)
    if parsed.get("stdio") == "vde" and "mtu" not in parsed:
        fields["mtu"] = VDE_MTU  # vde_plug carries at most 9236 bytes; vde-2 only 1521
    try:
        settings = NetworkSettings(**fields)
    except ValueError as error:
        field, _, message = str(error).partition(": ")
        key = _flag_for(field)
        raise ConfigError(labels.get(key, f"{where}{key}"), message) from None
    if parsed.get("isolate") and forwards:
        # Each VM is a network of its own: no one VM for a forward fixed at start.
        raise ConfigError(
            forwards[0][0],
            "not with isolate: each VM has its own network (add one per VM at run time)",
        )
    return NamespaceConfig(
        name,
        settings,
        listen=parsed.get("listen", ()),
        connect=parsed.get("connect", ()),
        stdio=parsed.get("stdio"),
        forwards=_forwards_within(forwards, settings),
        socket_mode=parsed.get("socket-mode", 0o600),
        isolate=parsed.get("isolate", False),
    )


def _entries(values: Mapping[str, Any], where: str) -> list[tuple[str, Any, str]]:
    """Each key with its value and the label its errors go by.  A ``user`` string is
    replaced by the keys it translates to, each labelled by its option (``user.host``):
    a key given both ways is an error, save the repeatable ones, whose values add up."""
    given = {raw_key.replace("_", "-"): value for raw_key, value in values.items()}
    entries = []
    for key, value in given.items():
        label = f"{where}{key}"
        if key != USER:
            entries.append((key, value, label))
            continue
        try:
            translated = translate(_text(value, label))
        except OptionError as error:
            where_in_it = f".{error.option}" if error.option else ""
            raise ConfigError(f"{label}{where_in_it}", error.message) from None
        for user_key, (option, user_value) in translated.items():
            if user_key in given and user_key not in _LISTS:
                raise ConfigError(
                    f"{label}.{option}",
                    f"sets {user_key}, which is given on its own too: say it once",
                )
            entries.append((user_key, user_value, f"{label}.{option}"))
    return entries


# libslirp's addresses within a network (net/slirp.c): the host part of 0.0.2.2, .3 and
# .15, so 10.0.2.2 is the gateway of 10.0.0.0/8 too; and ::2 and ::3 of an IPv6 prefix.
_LIBSLIRP_HOST_PARTS = (("gateway", 0x0202), ("dns", 0x0203), ("dhcp_start", 0x020F))
_LIBSLIRP_HOST_PARTS6 = (("gateway6", 2), ("dns6", 3))


def _addresses_within_networks(fields: dict[str, Any], labels: dict[str, str]) -> None:
    """A network given without its own addresses gets libslirp's, and errors about them
    name the network, which is what was given."""
    for network_field, parts, make in (
        ("network", _LIBSLIRP_HOST_PARTS, IPv4Address),
        ("network6", _LIBSLIRP_HOST_PARTS6, IPv6Address),
    ):
        network = fields.get(network_field)
        if network is None:
            continue
        base, host_mask = int(network.network_address), int(network.hostmask)
        for field, part in parts:
            if field not in fields:
                fields[field] = make(base | (part & host_mask))
                labels.setdefault(_flag_for(field), labels[_flag_for(network_field)])


def _ipv6_said_once(parsed: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """IPv6 off, and an IPv6 address given: one of the two is a mistake (QEMU says so too)."""
    if parsed.get("no-ipv6"):
        for key in ("net6", "gateway6", "dns6"):
            if key in parsed:
                raise ConfigError(labels[key], f"given, but IPv6 is off ({labels['no-ipv6']})")


def _one_host_name_per_mac(names: Sequence[tuple[bytes, str]], labels: Mapping[str, str]) -> None:
    seen = set()
    for mac, _ in names:
        if mac in seen:
            raise ConfigError(labels["vm-hostname"], f"{format_mac(mac)} is given twice")
        seen.add(mac)


def _forwards_within(
    specs: Sequence[tuple[str, tuple[Forward, ...]]], settings: NetworkSettings
) -> tuple[Forward, ...]:
    """Each spec checked under its own label (a flag's, or a user string's hostfwd)."""
    forwards: list[Forward] = []
    for label, spec in specs:
        check_forwards(spec, settings, label)
        forwards += spec
        _no_host_port_twice(forwards, label)
    return tuple(forwards)


def check_forwards(forwards: Sequence[Forward], settings: NetworkSettings, key: str) -> None:
    """A guest address must be a guest's of the network; a host port is given once."""
    network, network6 = settings.network, settings.network6
    reserved: set[IPv4Address | IPv6Address] = {
        settings.gateway,
        settings.dns,
        network.network_address,
        network.broadcast_address,
        settings.gateway6,
        settings.dns6,
        network6.network_address,
    }
    for forward in forwards:
        guest = forward.guest_address
        if guest is None:
            continue
        net = network if guest.version == 4 else network6
        if guest not in net or guest in reserved:
            raise ConfigError(key, f"{forward}: {guest} is not a guest address of {net}")
    _no_host_port_twice(forwards, key)


def _no_host_port_twice(forwards: Sequence[Forward], key: str) -> None:
    seen = set()
    for forward in forwards:
        host = (forward.protocol, forward.host_address, forward.host_port)
        if host in seen:
            raise ConfigError(key, f"{forward}: host port {forward.host_port} is forwarded twice")
        seen.add(host)


def _flag_for(field: str) -> str:
    names = {v: k for k, v in _SETTINGS_FIELDS.items()}
    return names.get(field, field)


def _text(value: object, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(key, f"{value!r} should be a string")
    return str(value)


def load_file(path: Path) -> ServerConfig:
    """A server config from a TOML file."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path}: {error}") from None
    # Underscores for dashes, as in the namespaces' keys (namespace_from_values).
    document = {key.replace("_", "-"): value for key, value in document.items()}
    log_level = _choice(LOG_LEVELS)(
        _text(document.pop("log-level", "info"), "log-level"), "log-level"
    )
    log_format = _choice(LOG_FORMATS)(
        _text(document.pop("log-format", "text"), "log-format"), "log-format"
    )
    server = {
        key: _SERVER_KEYS[key](_text(document.pop(key), key), key)
        for key in list(_SERVER_KEYS)
        if key in document
    }
    top_level = ("log-level", "log-format", *_SERVER_KEYS, "namespace")
    tables = document.pop("namespace", {})
    if not isinstance(tables, dict):
        raise ConfigError("namespace", "should be tables: [namespace.NAME]")
    namespaces = []
    # Parsed even when only inherited, so that a bad top-level key is named as such.
    default = namespace_from_values(DEFAULT_NAMESPACE, document, also_known=top_level)
    if not tables or default.listen or default.connect or default.stdio:
        namespaces.append(default)
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"namespace.{name}", "should be a table")
        inherited = {k: v for k, v in document.items() if k not in ("listen", "connect", "stdio")}
        namespaces.append(
            namespace_from_values(name, {**inherited, **table}, where=f"namespace.{name}.")
        )
    return validate(
        ServerConfig(
            tuple(namespaces),
            log_level,
            log_format,
            control=server["control"] if "control" in server else default_control(),
            control_optional="control" not in server,
            metrics=server.get("metrics"),
            pcap_dir=server.get("pcap"),
            state_dir=server.get("state-dir"),
        )
    )


def validate(config: ServerConfig) -> ServerConfig:
    """Checks across namespaces: something to serve, no address used twice."""
    seen: dict[str, str] = {}
    stdio = [ns.name for ns in config.namespaces if ns.stdio]
    if len(stdio) > 1:
        raise ConfigError("stdio", f"only one namespace can use stdin/stdout, not {stdio}")
    for namespace in config.namespaces:
        for address in (*namespace.listen, *namespace.connect):
            if str(address) in seen:
                raise ConfigError(
                    "listen", f"{address} is used by namespace {seen[str(address)]} already"
                )
            seen[str(address)] = namespace.name
    _no_host_port_twice([f for ns in config.namespaces for f in ns.forwards], "forward")
    if config.control is not None and f"unix:{config.control.path}" in seen:
        raise ConfigError("control", f"{config.control.path} is a VM listener's path too")
    return config


def default_socket_path() -> Path:
    """Where ``slirpnet serve`` with no flags listens."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir or os.getcwd()) / "slirpnet.sock"


def default_control_path() -> Path:
    """Where ``slirpnet serve`` opens its control socket, and ``slirpnet ctl`` looks for it,
    unless told otherwise."""
    return default_socket_path().with_name("slirpnet-control.sock")


def default_control() -> Address:
    return Address("unix", path=str(default_control_path()))


def with_default_listener(config: ServerConfig) -> ServerConfig:
    """A config that serves nothing gets a unix socket in the default place."""
    if any(ns.listen or ns.connect or ns.stdio for ns in config.namespaces):
        return config
    first, *rest = config.namespaces
    listener = Address("unix", path=str(default_socket_path()))
    return evolve(config, namespaces=(evolve(first, listen=(listener,)), *rest))
