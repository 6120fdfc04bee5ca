"""The DHCP server's records of its clients, and whose each one is.  No I/O.

Who a client is
---------------
RFC 2131 §4.2: a client is known by its client identifier (option 61) when it
sends one, otherwise by its hardware address (``client_key``), and has at most
one record.  A machine, though, is a MAC on one VM's port, and it keeps one
address whichever DHCP client it runs, as with libslirp (which knows only MACs)
and dnsmasq (which matches by MAC when either side has no identifier): a VM
whose client changes, ISC dhclient in an initramfs and then systemd-networkd or
dhcpcd with a DUID (RFC 4361), must not hold two addresses, one of them dead
and still the one forwards find.  So ``key_for`` looks a client's record up in
this order:

1. the record of its machine, the VM's own record of that MAC, whatever client
   made it: a new client takes it over;
2. its own record, if it is this VM's or no connected VM's: a client come back
   with another MAC, or on a VM that reconnected or a server that restarted;
3. a record of that MAC no connected VM has: a machine come back with another
   client, taken over too;
4. a new record, under its key; or when another connected VM's client has that
   identifier (a clone with the same machine-id, hence the same DUID) under its
   MAC; or, when that too is another connected VM's, none: it is refused.

A record is the VM's whose message made or last renewed it (``owner``; NOBODY
once restored, or when its VM goes), and another connected VM never takes it
over.  When a client binds, ``drop_others`` removes the other records of its
machine, so one MAC has one address.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import TypeVar

from attrs import define

K = TypeVar("K")
NOBODY = 0  # the owner of a record whose VM is not connected: VM ids start at 1


def client_key(client_id: bytes | None, mac: bytes) -> bytes:
    """RFC 2131 §4.2: ``b"id:"`` and the client identifier, else ``b"mac:"`` and the MAC."""
    return b"id:" + client_id if client_id else b"mac:" + mac


@define
class Lease:
    address: IPv4Address
    mac: bytes
    hostname: str | None
    expires: float  # bound until then; an offer holds the address until then
    bound: bool  # False while only offered, or after RELEASE
    owner: int = NOBODY  # the id of the VM whose client it is
    client: bytes = b""  # the client's key (``client_key``)


class LeaseTable:
    """Every record, found by client key, by address, by MAC and by owner.

    Those four fields of a ``Lease`` in the table change through ``update`` only;
    the others are the caller's to set.
    """

    def __init__(self) -> None:
        self._by_client: dict[bytes, Lease] = {}
        self._by_address: dict[IPv4Address, Lease] = {}
        self._by_mac: dict[bytes, dict[bytes, Lease]] = {}  # MAC -> client key -> record
        self._by_owner: dict[int, dict[bytes, Lease]] = {}  # VM id -> client key -> record

    def __iter__(self) -> Iterator[Lease]:
        return iter(self._by_client.values())

    def get(self, client: bytes) -> Lease | None:
        return self._by_client.get(client)

    def at(self, address: IPv4Address) -> Lease | None:
        """The record holding ``address``, if any."""
        return self._by_address.get(address)

    def owned_by(self, vm: int) -> list[Lease]:
        return list(self._by_owner.get(vm, {}).values())

    def add(self, lease: Lease) -> None:
        if lease.client in self._by_client or lease.address in self._by_address:
            raise ValueError(f"{lease.client!r} or {lease.address} has a record already")
        self._by_client[lease.client] = lease
        self._by_address[lease.address] = lease
        self._by_mac.setdefault(lease.mac, {})[lease.client] = lease
        if lease.owner != NOBODY:
            self._by_owner.setdefault(lease.owner, {})[lease.client] = lease

    def remove(self, lease: Lease) -> None:
        del self._by_client[lease.client]
        del self._by_address[lease.address]
        _discard(self._by_mac, lease.mac, lease.client)
        if lease.owner != NOBODY:
            _discard(self._by_owner, lease.owner, lease.client)

    def update(
        self,
        lease: Lease,
        *,
        address: IPv4Address | None = None,
        mac: bytes | None = None,
        client: bytes | None = None,
        owner: int | None = None,
    ) -> None:
        """Change the indexed fields given; the new client key and address must be free."""
        self.remove(lease)
        lease.address = lease.address if address is None else address
        lease.mac = lease.mac if mac is None else mac
        lease.client = lease.client if client is None else client
        lease.owner = lease.owner if owner is None else owner
        self.add(lease)

    def forget_owner(self, vm: int) -> None:
        """VM ``vm`` is gone: its records are nobody's until their clients come back."""
        for lease in self.owned_by(vm):
            self.update(lease, owner=NOBODY)

    def key_for(self, client: bytes, mac: bytes, vm: int) -> bytes | None:
        """The key of the record of ``client``, which sent from ``mac`` on VM ``vm``, or the
        key to make one under (see "Who a client is"); None when refused.  Nothing changes:
        a record taken over moves to ``client`` as it is made or renewed (``take_over``)."""
        machine = self._machine(mac, vm)
        if machine is None:
            own = self._by_client.get(client)
            if own is not None and own.owner in (vm, NOBODY):
                return client
            machine = self._machine(mac, NOBODY)
        if machine is not None:
            return machine.client
        for key in (client, client_key(None, mac)):
            if key not in self._by_client:
                return key
        return None

    def take_over(self, lease: Lease, client: bytes, owner: int) -> None:
        """``lease`` is ``owner``'s client's now, kept under its key ``client`` when no
        other record is (a clone's identifier stays with the clone)."""
        key = client if client not in self._by_client else None
        self.update(lease, client=key, owner=owner)

    def drop_others(self, lease: Lease) -> None:
        """``lease`` is bound: other records of its machine (its MAC, its VM's or
        nobody's) go, so the machine has one address."""
        for other in list(self._by_mac.get(lease.mac, {}).values()):
            if other is not lease and other.owner in (lease.owner, NOBODY):
                self.remove(other)

    def _machine(self, mac: bytes, owner: int) -> Lease | None:
        """The record of ``mac`` that ``owner`` has, the one bound or renewed last if
        several (records saved by servers before one address per machine)."""
        records = [r for r in self._by_mac.get(mac, {}).values() if r.owner == owner]
        return max(records, key=lambda record: record.expires, default=None)


def _discard(index: dict[K, dict[bytes, Lease]], key: K, client: bytes) -> None:
    records = index[key]
    del records[client]
    if not records:
        del index[key]
