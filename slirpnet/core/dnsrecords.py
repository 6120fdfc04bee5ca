"""The names the DNS address answers itself: configured records and the host's name."""

from __future__ import annotations

from collections.abc import Iterable

from slirpnet.core.addr import IPAddress


def key(name: str) -> str:
    """How a name is looked up: DNS names compare without case (RFC 4343), and a final
    dot says only that the name is absolute."""
    return name.lower().rstrip(".")


class LocalRecords:
    """Name -> its addresses: at most one IPv4 (its A record) and one IPv6 (its AAAA)."""

    def __init__(self, records: Iterable[tuple[str, IPAddress]] = ()) -> None:
        self._names: dict[str, dict[int, IPAddress]] = {}
        for name, address in records:
            self.set(name, address)

    def set(self, name: str, address: IPAddress) -> str:
        """Make ``address`` the name's record of its family, in place of any before it;
        returns the name as looked up."""
        name = key(name)
        self._names.setdefault(name, {})[address.version] = address
        return name

    def remove(self, name: str) -> bool:
        """Forget the name and all its records; False if there was no such name."""
        return self._names.pop(key(name), None) is not None

    def get(self, name: str) -> tuple[IPAddress, ...] | None:
        """The name's addresses, IPv4 first; None for a name that is not ours."""
        found = self._names.get(key(name))
        return None if found is None else tuple(found[v] for v in sorted(found))

    def __contains__(self, name: str) -> bool:
        return key(name) in self._names

    def items(self) -> list[tuple[str, tuple[IPAddress, ...]]]:
        """Every name with its addresses, sorted by name."""
        return [(name, self.get(name) or ()) for name in sorted(self._names)]
