"""The DHCP server of one namespace (RFC 2131).  No I/O.

Theory of operation
-------------------
Clients are known by their client identifier (option 61) or, without one, by
their hardware address (RFC 2131 §4.2), but a machine (a MAC on one VM's port)
keeps one address whichever DHCP client it runs: ``leases.py`` says whose each
record is.  Each client has at most one record,
kept for the server's lifetime even after its lease ends, so a VM that
reconnects (or reboots, or releases) gets the same address back while nobody
else has taken it.  Static leases tie an address to a MAC for good.

An address is free for a client when it is in the pool (or statically its
own), was not declined recently, and no other client holds it: a bound lease
until it expires, an offer for ``OFFER_HOLD`` seconds.

A client may be anyone a guest makes up, so each record has an owner, the VM
whose message made or last renewed it, and a VM may hold at most ``max_leases``
pool addresses at once (offers included; static leases aside): past that a
new client gets no offer and a REQUEST a NAK, so a guest spraying client
addresses cannot take the pool from the others.  A VM that reconnects is a
new owner, and takes over its old records as its clients come back; no VM
takes over a connected VM's.

Records outlive the server too: ``changes`` counts the changes worth keeping
(a lease bound or renewed, declined, released), so the shell knows when to
save ``leases()``, and ``restore`` takes saved ones
back at start (owned by nobody, as after a reconnect).

Replies follow RFC 2131 §4.3: OFFER answers DISCOVER; REQUEST is told apart
by its fields (§4.3.2: SELECTING carries a server identifier, INIT-REBOOT only
a requested address, RENEWING and REBINDING only ``ciaddr``) and gets ACK or
NAK; DECLINE, RELEASE are recorded silently; INFORM gets an ACK with the
options and no lease.  Where a reply goes is §4.1's rule.  A host name
(option 12) goes only where the operator set one (libslirp's ``hostname=``),
never the client's own echoed back, and only while the reply stays within the
576 bytes of §4.1.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Iterator
from ipaddress import IPv4Address

from attrs import frozen

from slirpnet.core.leases import Lease, LeaseTable, client_key
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.stats import Stats
from slirpnet.core.vm import Vm
from slirpnet.wire import ethernet
from slirpnet.wire.dhcp import OP_REQUEST, UNSPECIFIED, DhcpMessage, DhcpOption, MessageType
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)

OFFER_HOLD = 60.0  # how long an offered address waits for the client's REQUEST
DECLINE_HOLD = 3600.0  # how long an address a client found in use stays out of the pool
_LIMITED_BROADCAST = IPv4Address("255.255.255.255")
MAX_REPLY_LEN = 576  # RFC 2131 §4.1: what every client takes, IPv4 and UDP headers included
# IPv4, UDP, the BOOTP header and cookie, options 53 and 54, End: all but ``_options``.
_REPLY_OVERHEAD = 20 + 8 + 240 + 3 + 6 + 1
_CLIENT_MESSAGES = (
    MessageType.DISCOVER,
    MessageType.REQUEST,
    MessageType.DECLINE,
    MessageType.RELEASE,
)


@frozen
class DhcpReply:
    message: DhcpMessage
    dst_address: IPv4Address
    dst_mac: bytes


class DhcpServer:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self._leases = LeaseTable()
        self._declined: dict[IPv4Address, float] = {}  # address -> out of the pool until
        # Leases bound, renewed, declined or released so far (offers are not worth
        # keeping): the shell saves the records when it moves.
        self.changes = 0
        # Addresses of the pool taken by the gateway's services (guestfwds): never leased.
        self.reserved: Container[IPv4Address] = ()
        self._static = {lease.mac: lease.address for lease in settings.static_leases}
        self._static_owner = {lease.address: lease.mac for lease in settings.static_leases}
        self._hostnames = dict(settings.dhcp_hostnames)
        network = settings.network
        reserved = {settings.gateway, settings.dns, network.broadcast_address}
        self._pool = [
            IPv4Address(value)
            for value in range(int(settings.dhcp_start), int(network.broadcast_address))
            if IPv4Address(value) not in reserved
        ]

    def forget_owner(self, vm: Vm) -> None:
        """``vm`` is gone: its records stay, owned by nobody until its clients return."""
        self._leases.forget_owner(vm.id)

    def leases(self) -> list[Lease]:
        return list(self._leases)

    def restore(self, leases: Iterable[Lease], now: float) -> list[Lease]:
        """Take back records saved by an earlier server; the ones refused are returned.

        A record is refused when its address is not the client's to have here (outside
        the pool, another's static lease, or the settings changed) or taken already,
        and when its MAC has a record bound or renewed later: servers before one
        address per machine saved one per client.
        """
        leases = list(leases)
        taken = set()
        macs = {lease.mac for lease in self._leases}
        for saved in sorted(leases, key=lambda saved: saved.expires, reverse=True):
            client = saved.client
            if (
                not client.startswith((b"id:", b"mac:"))
                or self._leases.get(client) is not None
                or self._leases.at(saved.address) is not None
                or saved.mac in macs
                or not self._free_for(saved.address, client, saved.mac, now)
            ):
                continue
            lease = Lease(
                saved.address,
                saved.mac,
                saved.hostname,
                saved.expires,
                bound=saved.bound and saved.expires > now,
                client=client,
            )
            self._leases.add(lease)
            macs.add(lease.mac)
            taken.add(id(saved))
        self.changes += 1
        return [saved for saved in leases if id(saved) not in taken]

    def mac_of(self, address: IPv4Address) -> bytes | None:
        """The hardware address of the client holding ``address``, if any."""
        lease = self._leases.at(address)
        return None if lease is None else lease.mac

    def handle(self, message: DhcpMessage, vm: Vm, now: float) -> DhcpReply | None:
        """The reply to a client's message from ``vm``, or None (counted when dropped)."""
        stats = vm.stats
        try:
            kind = message.message_type
            client_id = message.client_id
            # Every other option read below, read now: a malformed one drops the message
            # before anything changes, under its reason whatever the state.
            _ = message.requested_ip, message.server_id, message.hostname
        except WireError as error:
            stats.drop(error.reason)
            return None
        if message.op != OP_REQUEST:
            stats.drop("dhcp_not_a_request")
            return None
        if kind is None:
            stats.drop("dhcp_bootp_unsupported")
            return None
        if message.giaddr != UNSPECIFIED:
            stats.drop("dhcp_relayed")  # no relay agent can reach a virtual segment
            return None
        if len(message.chaddr) != 6:
            stats.drop("dhcp_not_ethernet")
            return None
        if kind == MessageType.INFORM:
            return self._inform(message, stats)
        if kind not in _CLIENT_MESSAGES:
            stats.drop("dhcp_unexpected_type")
            return None
        client = self._leases.key_for(client_key(client_id, message.chaddr), message.chaddr, vm.id)
        if client is None:
            # Its identifier and its MAC both name other connected VMs' clients: a guest
            # sending another's hardware address.  Refused as a client over the limit is.
            vm.refuse("dhcp_client_in_use", now, f"{_mac(message)} is another VM's DHCP client")
            return self._nak(message) if kind == MessageType.REQUEST else None
        if kind == MessageType.DISCOVER:
            return self._discover(message, client, vm, now)
        if kind == MessageType.REQUEST:
            return self._request(message, client, vm, now)
        if kind == MessageType.DECLINE:
            self._decline(message, client, now)
        else:
            self._release(message, client, now)
        return None

    # -- message types -----------------------------------------------------------------

    def _discover(
        self, message: DhcpMessage, client: bytes, vm: Vm, now: float
    ) -> DhcpReply | None:
        if not self._room_for(vm, client, message.chaddr, now):
            return None  # RFC 2131 §4.3.1: a server may choose not to answer
        address = self._choose(message, client, now)
        if address is None:
            vm.refuse("dhcp_pool_exhausted", now, f"no address free for {_mac(message)}")
            return None
        lease = self._record(client, address, message, vm, now)
        if not lease.bound or lease.expires <= now:  # expired exactly now: see _free_for
            lease.bound = False
            lease.expires = now + OFFER_HOLD
        return self._reply(message, MessageType.OFFER, address)

    def _request(self, message: DhcpMessage, client: bytes, vm: Vm, now: float) -> DhcpReply | None:
        server_id = message.server_id
        requested = message.requested_ip
        if server_id is not None:  # SELECTING
            if server_id != self.settings.gateway:
                self._forget_offer(client)  # the client took another server's offer
                return None
            address = requested
        elif requested is not None:  # INIT-REBOOT
            address = requested
        elif message.ciaddr != UNSPECIFIED:  # RENEWING or REBINDING
            address = message.ciaddr
        else:
            address = None
        if (
            address is None
            or not self._free_for(address, client, message.chaddr, now)
            or not self._room_for(vm, client, message.chaddr, now)
        ):
            vm.stats.count("dhcp_nak")
            return self._nak(message)
        lease = self._record(client, address, message, vm, now)
        lease.bound = True
        lease.expires = now + self.settings.lease_time
        self._leases.drop_others(lease)
        self.changes += 1
        return self._reply(message, MessageType.ACK, address)

    def _decline(self, message: DhcpMessage, client: bytes, now: float) -> None:
        address = message.requested_ip
        lease = self._leases.get(client)
        if address is None or lease is None or lease.address != address:
            return
        # RFC 2131 §4.3.3: someone else answers for this address; keep it out of the pool.
        log.warning("DHCP address %s declined by %s: in use", address, _mac(message))
        self._declined[address] = now + DECLINE_HOLD
        self._leases.remove(lease)
        self.changes += 1

    def _release(self, message: DhcpMessage, client: bytes, now: float) -> None:
        lease = self._leases.get(client)
        if lease is not None and lease.address == message.ciaddr:
            lease.bound = False
            lease.expires = now  # free for others, still this client's first choice
            self.changes += 1

    def _inform(self, message: DhcpMessage, stats: Stats) -> DhcpReply | None:
        if message.ciaddr == UNSPECIFIED:
            stats.drop("dhcp_inform_without_ciaddr")  # RFC 2131 table 5: ciaddr is set
            return None
        # RFC 2131 §3.4: configuration only; no lease time, no yiaddr.
        reply = message.reply(
            MessageType.ACK, self.settings.gateway, options=self._options(message, lease=False)
        )
        return DhcpReply(reply, message.ciaddr, message.chaddr)

    # -- addresses ---------------------------------------------------------------------

    def _choose(self, message: DhcpMessage, client: bytes, now: float) -> IPv4Address | None:
        """RFC 2131 §4.3.1's order: static, the client's own, the requested, a free one."""
        static = self._static.get(message.chaddr)
        if static is not None:
            return static
        lease = self._leases.get(client)
        candidates: list[IPv4Address] = []
        if lease is not None:
            candidates.append(lease.address)
        requested = message.requested_ip
        if requested is not None:
            candidates.append(requested)
        for address in candidates:
            if self._free_for(address, client, message.chaddr, now):
                return address
        # Addresses nobody ever had first, so returning clients keep theirs longer.
        for address in self._pool_order(now):
            if self._free_for(address, client, message.chaddr, now):
                return address
        return None

    def _pool_order(self, now: float) -> Iterator[IPv4Address]:
        yield from (address for address in self._pool if self._leases.at(address) is None)
        yield from (address for address in self._pool if self._leases.at(address) is not None)

    def _free_for(self, address: IPv4Address, client: bytes, mac: bytes, now: float) -> bool:
        owner = self._static_owner.get(address)
        if owner is not None:
            return owner == mac
        if mac in self._static:
            return False  # a client with a static lease has that address and no other
        if (
            address not in self._pool
            or address in self.reserved
            or self._declined.get(address, 0.0) > now
        ):
            return False
        holder = self._leases.at(address)
        return holder is None or holder.client == client or holder.expires <= now

    def _record(
        self, client: bytes, address: IPv4Address, message: DhcpMessage, vm: Vm, now: float
    ) -> Lease:
        """The record under ``client``, now for ``address``, this client's and owned by
        ``vm``; an expired holder of the address is evicted."""
        holder = self._leases.at(address)
        if holder is not None and holder.client != client:
            self._leases.remove(holder)
        lease = self._leases.get(client)
        if lease is None:
            lease = Lease(address, message.chaddr, None, now, bound=False, client=client)
            self._leases.add(lease)
        elif lease.address != address:  # a lease of its own begins
            self._leases.update(lease, address=address)
            lease.hostname, lease.expires, lease.bound = None, now, False
        if lease.mac != message.chaddr:  # the client came back with another MAC
            self._leases.update(lease, mac=message.chaddr)
        self._leases.take_over(lease, client_key(message.client_id, message.chaddr), vm.id)
        lease.hostname = message.hostname or lease.hostname
        return lease

    def _room_for(self, vm: Vm, client: bytes, mac: bytes, now: float) -> bool:
        """May ``client`` of ``vm`` have a lease?  Yes if it holds one already (a renewal,
        or a VM come back), if its address is static, or if ``vm`` is under its limit."""
        lease = self._leases.get(client)
        if (lease is not None and lease.expires > now) or mac in self._static:
            return True
        held = [
            record
            for record in self._leases.owned_by(vm.id)
            if record.expires > now and record.mac not in self._static
        ]
        limit = self.settings.max_leases
        if len(held) < limit:
            return True
        vm.refuse("dhcp_lease_limit", now, f"{limit} leases held already (--max-leases)")
        return False

    def _forget_offer(self, client: bytes) -> None:
        lease = self._leases.get(client)
        if lease is not None and not lease.bound:
            lease.expires = 0.0

    # -- replies -----------------------------------------------------------------------

    def _options(self, message: DhcpMessage, *, lease: bool) -> list[DhcpOption]:
        settings = self.settings
        options = [
            DhcpOption.subnet_mask(settings.network.netmask),
            DhcpOption.routers([settings.gateway]),
            DhcpOption.dns_servers([settings.dns]),
            DhcpOption.interface_mtu(settings.mtu),
        ]
        if lease:
            # T1 and T2 at RFC 2131 §4.4.5's defaults: 0.5 and 0.875 of the lease.
            options += [
                DhcpOption.lease_time(settings.lease_time),
                DhcpOption.renewal_time(settings.lease_time // 2),
                DhcpOption.rebinding_time(settings.lease_time * 7 // 8),
            ]
        if settings.domain:
            options.append(DhcpOption.domain_name(settings.domain))
        if settings.search:
            options.append(DhcpOption.domain_search(settings.search))
        # Option 12 only where the operator named the guest, by MAC or for all (libslirp's
        # hostname=): clients take it as the name to set (systemd-networkd does).
        hostname = self._hostnames.get(message.chaddr, settings.dhcp_hostname)
        if hostname:
            name = DhcpOption.hostname(hostname)
            # Left out when the reply would pass the 576 bytes every client takes (and no
            # MTU is smaller).
            used = _REPLY_OVERHEAD + sum(len(option.encode()) for option in options)
            if used + len(name.encode()) <= MAX_REPLY_LEN:
                options.append(name)
        return options

    def _reply(self, message: DhcpMessage, kind: MessageType, address: IPv4Address) -> DhcpReply:
        reply = message.reply(
            kind, self.settings.gateway, yiaddr=address, options=self._options(message, lease=True)
        )
        # RFC 2131 §4.1: unicast to a configured client, broadcast when it asked,
        # otherwise unicast to the address being handed out.
        if message.ciaddr != UNSPECIFIED:
            return DhcpReply(reply, message.ciaddr, message.chaddr)
        if message.broadcast:
            return DhcpReply(reply, _LIMITED_BROADCAST, ethernet.BROADCAST)
        return DhcpReply(reply, address, message.chaddr)

    def _nak(self, message: DhcpMessage) -> DhcpReply:
        # RFC 2131 §4.3.2: a NAK is broadcast, for the client may hold a wrong address.
        reply = message.reply(MessageType.NAK, self.settings.gateway)
        return DhcpReply(reply, _LIMITED_BROADCAST, ethernet.BROADCAST)


def _mac(message: DhcpMessage) -> str:
    return ethernet.format_mac(message.chaddr)
