"""QEMU's ``-netdev user`` option string, in slirpnet's own keys.

``slirpnet serve --user 'user,id=n0,net=192.168.76.0/24,hostfwd=tcp::2222-:22'``
(``user = "..."`` in a namespace of the TOML file) takes what a QEMU command
line says to libslirp.  The string is read as QEMU reads it (QemuOpts,
util/qemu-option.c): ``key=value`` items split at commas, ``,,`` a comma inside
a value, a first item without ``=`` the backend's type, an item without ``=``
afterwards a boolean switched on (``noKEY`` off), the last of a repeated key
winning except for the lists (``hostfwd``, ``guestfwd``, ``dnssearch``).  Then
each option becomes the key of slirpnet's that means the same, with its value
spelled as that key takes it (net/slirp.c decides what QEMU means): the config
parses and checks it like any other, so the messages are the same.

This module only translates: ``OptionError`` names the option; the config
turns it into its one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from ipaddress import IPv4Address

# The type QEMU implies for a first item without "=" (``-netdev user,...``).
TYPE = "user"
# Booleans as QEMU's qapi_bool_parse reads them.
_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")
# A /64 unless told (net/net.c, ipv6-net; net/slirp.c, ipv6-prefixlen).
DEFAULT_PREFIX_LEN = "64"


class OptionError(ValueError):
    """What is wrong, and the option it is about ("" for the string as a whole)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def split(text: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` items of a QemuOpts string, in order, ``type`` for an implied first.

    A boolean written alone (``restrict``, ``norestrict``) comes as ``on`` or ``off``.
    """
    items: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        end_of_name = _find_any(text, "=,", position)
        name = text[position:end_of_name]
        if end_of_name < len(text) and text[end_of_name] == "=":
            value, position = _value(text, end_of_name + 1)
        elif not items and name:
            # QEMU's implied first option, read as a value: "user,,x" is the type "user,x".
            name, (value, position) = "type", _value(text, position)
        else:
            name, value = _flag(name)
            position = end_of_name + 1
        items.append((name, value))
    return items


def _find_any(text: str, characters: str, start: int) -> int:
    found = [i for i in (text.find(c, start) for c in characters) if i >= 0]
    return min(found, default=len(text))


def _value(text: str, start: int) -> tuple[str, int]:
    """A value up to a lone comma, ``,,`` standing for a comma; and where the next item starts."""
    value = []
    position = start
    while position < len(text):
        comma = text.find(",", position)
        if comma < 0:
            value.append(text[position:])
            return "".join(value), len(text)
        value.append(text[position:comma])
        if text.startswith(",,", comma):
            value.append(",")
            position = comma + 2
        else:
            return "".join(value), comma + 1
    return "".join(value), len(text)


def _flag(name: str) -> tuple[str, str]:
    """QEMU's short form of a boolean: ``restrict`` is ``restrict=on``, ``norestrict`` off."""
    if name.startswith("no") and name[2:] in _BOOLEANS:
        return name[2:], "off"
    if name in _BOOLEANS:
        return name, "on"
    if not name:
        raise OptionError("", "an empty option (a lone comma too many?)")
    raise OptionError(name, "has no value (KEY=VALUE)")


def translate(text: str) -> dict[str, tuple[str, object]]:
    """slirpnet's keys for a ``-netdev user`` string: key -> (the option it came from, value).

    A value is a string, a list of strings (the repeatable keys) or a boolean,
    as the TOML file gives them; ``OptionError`` names an option slirpnet cannot take.
    """
    items = split(text)
    backend = dict(items).get("type", TYPE)  # first: a tap's options are not mistakes
    if backend != TYPE:
        raise OptionError("type", f"{backend!r} is not user: only -netdev user's options are taken")
    options: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for option, value in items:
        if option in _LISTS:
            lists.setdefault(option, []).append(value)
        elif option in _KNOWN:
            options[option] = value  # the last one wins, as in QEMU's opts visitor
        elif option in _MISSING:
            raise OptionError(option, f"slirpnet has no {_MISSING[option]}")
        else:
            close = difflib.get_close_matches(option, [*_KNOWN, *_LISTS], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OptionError(option, f"not an option of -netdev user{hint}")
    options.pop("type", None)
    options.pop("id", None)  # QEMU's name for the netdev: slirpnet has the namespace's
    keys: dict[str, tuple[str, object]] = {}
    for option, value in options.items():
        if option in _SAME:
            keys[_SAME[option]] = (option, value)
    if "restrict" in options:
        keys["restrict"] = ("restrict", _boolean("restrict", options["restrict"]))
    for option, values in lists.items():
        key, spell = _LISTS[option]
        keys[key] = (option, [spell(option, value) for value in values])
    keys.update(_network(options))
    keys.update(_network6(options))
    keys.update(_families(options))
    return keys


def _boolean(option: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OptionError(option, f"{value!r} is not on or off")


def _network(options: dict[str, str]) -> dict[str, tuple[str, object]]:
    """``net=ADDR[/MASK]``, or the old ``ip=ADDR`` (a /24), as net/slirp.c reads them."""
    if "net" in options:
        return {"net": ("net", _classful(options["net"]))}
    if "ip" in options:
        return {"net": ("ip", f"{options['ip']}/24")}
    return {}


def _classful(text: str) -> str:
    """Without a mask, QEMU takes the address's class's, as net/slirp.c decides it:
    10.0.2.0 is a /8 (so the gateway is still 10.0.2.2)."""
    if "/" in text:
        return text  # a length or a dotted mask: the config reads both
    try:
        address = int(IPv4Address(text))
    except ValueError:
        return text  # the config says what is wrong with it
    if not address & 0x80000000:
        length = 8  # class A
    elif address & 0xFFF00000 == 0xAC100000:
        length = 12  # 172.16.0.0/12
    elif address & 0xC0000000 == 0x80000000 or address & 0xFFFF0000 == 0xC0A80000:
        length = 16  # class B, 192.168.0.0/16
    elif address & 0xFFFF0000 == 0xC6120000:
        length = 15  # 198.18.0.0/15
    elif address & 0xE0000000 == 0xE0000000:
        length = 24
    else:
        length = 28  # the rest, QEMU's "multicast/reserved"
    return f"{text}/{length}"


def _network6(options: dict[str, str]) -> dict[str, tuple[str, object]]:
    """``ipv6-net=ADDR[/LEN]``, or the older ``ipv6-prefix=`` and ``ipv6-prefixlen=``;
    net/net.c turns the first into the other two, so it wins."""
    if "ipv6-net" in options:
        prefix, _, length = options["ipv6-net"].partition("/")
        return {"net6": ("ipv6-net", f"{prefix}/{length or DEFAULT_PREFIX_LEN}")}
    if "ipv6-prefix" in options or "ipv6-prefixlen" in options:
        option = "ipv6-prefix" if "ipv6-prefix" in options else "ipv6-prefixlen"
        prefix = options.get("ipv6-prefix", "fec0::")
        return {"net6": (option, f"{prefix}/{options.get('ipv6-prefixlen', DEFAULT_PREFIX_LEN)}")}
    return {}


def _families(options: dict[str, str]) -> dict[str, tuple[str, object]]:
    """QEMU serves both unless one is said: ``ipv4=on`` alone means IPv4 only,
    ``ipv6=on`` alone IPv6 only (net_init_slirp).  slirpnet always serves IPv4."""
    ipv4 = _boolean("ipv4", options["ipv4"]) if "ipv4" in options else None
    ipv6 = _boolean("ipv6", options["ipv6"]) if "ipv6" in options else None
    if ipv4 is False:
        raise OptionError("ipv4", "slirpnet always serves IPv4")
    if ipv6 and ipv4 is None:
        raise OptionError(
            "ipv6", "ipv6=on without ipv4=on is IPv6 only to QEMU; slirpnet always serves IPv4"
        )
    if ipv6 is False or (ipv4 and ipv6 is None):
        return {"no-ipv6": ("ipv6" if ipv6 is False else "ipv4", True)}
    return {}


def _hostfwd(option: str, value: str) -> str:
    """``[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT``, the syntax ``forward`` is
    modelled on: QEMU's empty protocol is TCP.  (Its empty host address is every
    address; slirpnet's is loopback, on purpose.)"""
    protocol, colon, rest = value.partition(":")
    if not colon:
        raise OptionError(
            option, f"{value!r} is not [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"
        )
    if protocol == "unix":
        raise OptionError(option, "slirpnet has no forwards from a host unix socket")
    return f"{protocol or 'tcp'}:{rest}"


def _as_is(option: str, value: str) -> str:
    return value


# Options whose value slirpnet's key takes as it is.
_SAME = {
    "host": "gateway",
    "dns": "dns",
    "dhcpstart": "dhcp-start",
    "domainname": "domain",
    "hostname": "hostname",
    "tftp": "tftp",
    "bootfile": "bootfile",
    "tftp-server-name": "tftp-server-name",
    "ipv6-host": "gateway6",
    "ipv6-dns": "dns6",
    "mtu": "mtu",  # slirpnet's own: QEMU has no such option
}
# Repeatable options: slirpnet's list key, and how one value is spelled for it.
_LISTS: dict[str, tuple[str, Callable[[str, str], str]]] = {
    "hostfwd": ("forward", _hostfwd),
    "guestfwd": ("guestfwd", _as_is),
    "dnssearch": ("search", _as_is),
}
_BOOLEANS = ("restrict", "ipv4", "ipv6")
# Options read together by the functions above.
_COMBINED = ("type", "id", "net", "ip", "ipv6-net", "ipv6-prefix", "ipv6-prefixlen")
_KNOWN = (*_SAME, *_BOOLEANS, *_COMBINED)
# QEMU's options for what slirpnet does not have.
_MISSING = {"smb": "SMB server", "smbserver": "SMB server"}
