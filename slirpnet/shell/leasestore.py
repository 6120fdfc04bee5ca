"""DHCP leases kept over a restart: one JSON file per namespace in the state directory.

A restart of slirpnet must not move a VM to another address, nor leave forwards
looking for it until its lease is renewed: the namespace's records are written
(a temporary file renamed over the old one, so a crash leaves one or the other
whole) as soon as they change (then at most once per ``SAVE_INTERVAL``) and
when the namespace stops, and
given back to the core at start.  Times are saved as wall-clock times, for the
core's clock starts again with the process.  Files written when a machine
could hold a record per DHCP client are read as they are: a MAC's several
records come back as its newest (``DhcpServer.restore``).  A file that cannot be read is
renamed aside with a warning and the namespace starts with no leases: state is a
convenience, never a reason not to serve.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import suppress
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.leases import Lease
from slirpnet.wire.ethernet import format_mac, parse_mac

log = logging.getLogger(__name__)

FORMAT = 1
# Seconds between two writes at least, however busy DHCP is: a lease bound in between
# waits at most this long to be saved.
SAVE_INTERVAL = 0.25


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/slirpnet``; else /var/lib/slirpnet for root, ~/.local/state/slirpnet."""
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "slirpnet"
    if os.geteuid() == 0:
        return Path("/var/lib/slirpnet")
    return Path.home() / ".local" / "state" / "slirpnet"


def lease_file(state_dir: Path, namespace: str) -> Path:
    # A namespace's name is the user's (a TOML table key): quoted into one file name.
    return state_dir / f"{quote(namespace, safe='')}.leases.json"


class LeaseStore:
    """The lease file of one namespace's DHCP server."""

    def __init__(self, path: Path, dhcp: DhcpServer) -> None:
        self.path = path
        self.dhcp = dhcp
        self._saved = -1  # the DHCP server's ``changes`` when last written
        self._failing = False  # a write failed: warned once until one succeeds
        self._changed = trio.Event()

    def restore(self, now: float) -> None:
        """Give the core the leases saved by an earlier server, if any."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        except OSError as error:
            log.warning("lease file %s unreadable: %s; starting without", self.path, error)
            return
        try:
            leases = _decode(json.loads(text), now, time.time())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            aside = self.path.with_name(self.path.name + ".corrupt")
            try:
                self.path.replace(aside)
            except OSError:
                aside = self.path
            log.warning(
                "lease file %s is corrupt (%s): kept as %s; starting without leases",
                self.path,
                error or type(error).__name__,
                aside,
            )
            return
        refused = self.dhcp.restore(leases, now)
        self._saved = self.dhcp.changes
        log.info(
            "%d leases restored from %s%s",
            len(leases) - len(refused),
            self.path,
            f"; {len(refused)} left out (no longer fit the network, or an older lease of the"
            " same MAC)"
            if refused
            else "",
        )

    def save(self, now: float) -> None:
        """Write the records now if they changed since the last write."""
        changes = self.dhcp.changes
        if changes != self._saved:
            self._write(changes, self._document(now))

    async def save_in_thread(self, now: float) -> None:
        """``save``, with the writing (and its fsync) off the event loop's thread."""
        changes = self.dhcp.changes
        if changes != self._saved:
            text = self._document(now)
            await trio.to_thread.run_sync(self._write, changes, text)

    def _document(self, now: float) -> str:
        return json.dumps(_encode(self.dhcp.leases(), now, time.time()), indent=1) + "\n"

    def _write(self, changes: int, text: str) -> None:
        """Write ``text``, the records as of ``changes``; a failure is warned of once."""
        try:
            _write_atomically(self.path, text)
        except OSError as error:
            if not self._failing:
                log.warning("cannot save leases to %s: %s", self.path, error)
            self._failing = True
            return
        self._failing = False
        self._saved = changes

    def changed(self) -> None:
        """The records changed (``NamespaceRuntime.on_leases_changed``)."""
        self._changed.set()

    async def keep_saved(self) -> None:
        """Save at each change, at most once per ``SAVE_INTERVAL``, and once more when
        cancelled.  At once: a server killed a moment after a lease must still know it."""
        try:
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                await self.save_in_thread(trio.current_time())
                await trio.sleep(SAVE_INTERVAL)
        finally:
            self.save(trio.current_time())


def _encode(leases: list[Lease], now: float, wall: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "leases": [
            {
                "client": lease.client.hex(),
                "address": str(lease.address),
                "mac": format_mac(lease.mac),
                "hostname": lease.hostname,
                "bound": lease.bound,
                "expires": round(wall + lease.expires - now, 3),
            }
            for lease in leases
            # An offer is the client's for a minute: not worth keeping over a restart.
            if lease.client and (lease.bound or lease.expires <= now)
        ],
    }


def _decode(document: Any, now: float, wall: float) -> list[Lease]:
    """The saved leases, their expiry on the core's clock; raises on any malformed field."""
    if document.get("format") != FORMAT:
        raise ValueError(f"format {document.get('format')!r}, not {FORMAT}")
    leases = []
    for record in document["leases"]:
        hostname = record["hostname"]
        if hostname is not None and not isinstance(hostname, str):
            raise TypeError("hostname is not a string")
        leases.append(
            Lease(
                IPv4Address(record["address"]),
                parse_mac(record["mac"]),
                hostname,
                now + float(record["expires"]) - wall,
                bool(record["bound"]),
                client=bytes.fromhex(record["client"]),
            )
        )
    return leases


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
