"""The gateway's read-only TFTP server, for network boot (libslirp's ``tftp=``).  No I/O.

Theory of operation
-------------------
With ``settings.tftp_root`` set, port 69 of the gateway address (of either
family) takes read requests (RFC 1350); without it the port is NATed to the
host like any other.  Each accepted request is a transfer, a ``TftpFlow``
answered from a port of its own on the gateway address (RFC 1350 §4: the
server's transfer ID, from ``GatewayPorts``), held in its VM's flows under the
key of that UDP conversation; only datagrams from the requesting guest's
address and port to that port reach it, anything else to that port goes on to
the host as before.

The core reads no file.  A transfer asks the shell through the flow actions:

* ``OpenFlow(flow)``: open ``flow.path`` read-only beneath the root, following
  no link out of it.  Answered by ``flow_received(flow, FILE_SIZE.pack(size))``,
  or ``flow_error(flow, NOT_FOUND | DENIED | ...)``.
* ``ReadFlow(flow, offset, size)``: answered by ``flow_received(flow, data)``,
  ``data`` shorter than ``size`` only at the end of the file.
* ``CloseFlow(flow)``: done with the file.

A transfer goes OPENING -> (OACK, when options were agreed: RFC 2347 §4 waits for
ACK 0) -> READING -> SENDING -> READING ... until the ACK of the last block, a
block shorter than the block size (empty when the file fills whole blocks).
Each window (RFC 7440: ``windowsize`` blocks, one without the option) is read
at once and sent whole; an ACK of its last block moves to the next, an ACK of
an earlier one (the guest missed a block) restarts the window after it (RFC
7440 §4), and duplicate ACKs are passed over (RFC 1350's Sorcerer's Apprentice
bug is answering them).  A window or OACK unacknowledged for the timeout is
sent again, at most ``MAX_TRIES`` times, then the transfer ends.  Block numbers
roll over from 65535 to 0, as tftp-hpa's and iPXE's clients expect of large files.

Refusals are answered with a TFTP ERROR (RFC 1350 §7) and counted on the VM:
a write (access violation), a path that is absolute, holds ``..`` or is not
UTF-8 (access violation), a mode other than octet, more than
``MAX_TRANSFERS`` at once from one VM.  Malformed packets are dropped and
counted under the codec's reason.
"""

from __future__ import annotations

import logging
import struct

from slirpnet.core.addr import family_of
from slirpnet.core.flows import PROTO_UDP, Endpoint, ReadFlow, TftpFlow, flow_key
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.frames import Frames
from slirpnet.core.gatewayports import GatewayPorts
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import tftp
from slirpnet.wire.errors import WireError
from slirpnet.wire.tftp import ErrorCode

log = logging.getLogger(__name__)

# The shell's answer to OpenFlow: the file's size.
FILE_SIZE = struct.Struct("!Q")
# flow_error kinds for an open: no such file, or one the guest may not read.
NOT_FOUND = "not_found"
DENIED = "denied"

MAX_TRANSFERS = 8  # per VM at once; iPXE fetches one file at a time
DEFAULT_TIMEOUT = 1.0  # seconds, before a window is sent again (RFC 2349 lets the guest choose)
MAX_TRIES = 5  # sends of one window or OACK after the first, before the transfer ends
MAX_WINDOW_BYTES = 256 * 1024  # a window's data, held until acknowledged, read at once
MAX_PATH_LEN = 255  # a request holds 512 bytes at most (RFC 2347 §2)
_BLOCK_NUMBERS = 0x10000
_DATA_HEADER = 4  # opcode and block number, before a block's data

_OPENING, _OACK, _READING, _SENDING = "opening", "oack", "reading", "sending"


class _Transfer:
    """One guest's read: what was agreed and where it stands."""

    def __init__(self, flow: TftpFlow, block_size: int, window_size: int, timeout: float) -> None:
        self.flow = flow
        self.block_size = block_size
        self.window_size = window_size
        self.timeout = timeout
        self.options: list[tuple[str, str]] = []  # agreed, for the OACK (tsize filled in later)
        self.tsize = False  # the guest asked for the file's size
        self.state = _OPENING
        self.oack = b""
        self.base = 1  # the first block not acknowledged, counted without rolling over
        self.window: list[bytes] = []  # DATA packets of blocks base, base + 1, ...
        self.final: int | None = None  # the last block, once a read reached the end
        self.tries = 0
        self.size = 0  # the file's, as the shell found it on opening


class TftpService:
    def __init__(
        self, settings: NetworkSettings, frames: Frames, flows: FlowTable, ports: GatewayPorts
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.flows = flows
        self.ports = ports
        # Every transfer's state by its flow; closed ones are swept as new ones start.
        self._transfers: dict[TftpFlow, _Transfer] = {}

    def takes(self, vm: Vm, guest: Endpoint, port: int) -> bool:
        """Is a datagram from ``guest`` to the gateway's ``port`` this server's?"""
        if self.settings.tftp_root is None:
            return False
        return port == tftp.SERVER_PORT or isinstance(
            vm.flows.get(self._key(guest, port)), TftpFlow
        )

    def flows_of(self, vm: Vm) -> list[TftpFlow]:
        return [flow for flow in self._transfers if flow.vm is vm and not flow.closed]

    def next_ack(self, flow: TftpFlow) -> int | None:
        """The block number whose ACK moves ``flow``'s transfer on (0 for the OACK), or
        None while nothing of it is in flight."""
        transfer = self._transfers.get(flow)
        if transfer is None or flow.closed or transfer.state not in (_OACK, _SENDING):
            return None
        if transfer.state == _OACK:
            return 0
        return (transfer.base + len(transfer.window) - 1) % _BLOCK_NUMBERS

    def _key(self, guest: Endpoint, port: int) -> tuple[int, int, int, int, int]:
        gateway = self.settings.gateway_for(guest.address)
        return flow_key(PROTO_UDP, guest.address, guest.port, gateway, port)

    def _live(self, flow: TftpFlow) -> _Transfer | None:
        transfer = self._transfers.get(flow)
        return None if transfer is None or flow.closed else transfer

    # -- datagrams from guests ---------------------------------------------------------

    def receive(self, vm: Vm, guest: Endpoint, port: int, payload: bytes, now: float) -> None:
        """A datagram ``takes`` said is ours."""
        try:
            packet = tftp.parse(payload)
        except WireError as error:
            vm.stats.drop(error.reason)
            return
        if port == tftp.SERVER_PORT:
            self._request(vm, guest, packet, now)
            return
        flow = vm.flows[self._key(guest, port)]
        assert isinstance(flow, TftpFlow)
        transfer = self._transfers[flow]
        if isinstance(packet, tftp.Ack):
            self._ack(transfer, packet.block, now)
        elif isinstance(packet, tftp.Error):
            vm.stats.count("tftp_guest_error")  # the guest gave up, or refused our options
            self.flows.close(flow)
        else:
            # RFC 1350 §7: a packet this side of the transfer cannot take.
            vm.stats.drop("tftp_unexpected_packet")
            self._error(flow.vm, guest, port, ErrorCode.ILLEGAL_OPERATION, "unexpected packet")
            self.flows.close(flow)

    def _request(self, vm: Vm, guest: Endpoint, packet: tftp.Packet, now: float) -> None:
        port = tftp.SERVER_PORT
        if not isinstance(packet, tftp.Request):
            vm.stats.drop("tftp_not_a_request")
            if not isinstance(packet, tftp.Error):  # an error is never answered with one
                self._error(vm, guest, port, ErrorCode.ILLEGAL_OPERATION, "requests only here")
            return
        if packet.opcode == tftp.Opcode.WRQ:
            vm.stats.drop("tftp_write_refused")
            self._error(vm, guest, port, ErrorCode.ACCESS_VIOLATION, "read-only server")
            return
        if packet.mode != "octet":
            vm.stats.drop("tftp_mode_refused")
            self._error(vm, guest, port, ErrorCode.ILLEGAL_OPERATION, "octet mode only")
            return
        path = relative_path(packet.filename)
        if path is None:
            vm.stats.drop("tftp_path_refused")
            self._error(vm, guest, port, ErrorCode.ACCESS_VIOLATION, "access violation")
            return
        self._transfers = {f: t for f, t in self._transfers.items() if not f.closed}
        earlier = next((f for f in self.flows_of(vm) if f.guest == guest), None)
        if earlier is not None:
            if self._repeated(self._transfers[earlier], path, now):
                return
            self.flows.close(earlier)  # the guest moved on to another request
        if not self.flows.room(vm, now):
            self._error(vm, guest, port, ErrorCode.NOT_DEFINED, "too many flows")
            return
        if len(self.flows_of(vm)) >= MAX_TRANSFERS:
            vm.refuse("tftp_transfer_limit", now, f"{MAX_TRANSFERS} TFTP transfers at once")
            self._error(vm, guest, port, ErrorCode.NOT_DEFINED, "too many transfers")
            return
        self._start(vm, guest, path, packet.options, now)

    def _repeated(self, transfer: _Transfer, path: str, now: float) -> bool:
        """The guest sent its request again (our first answer was lost): answer it again
        and say True; False when it is another request."""
        if transfer.flow.path != path or transfer.base != 1:
            return False
        if transfer.state in (_OACK, _SENDING):
            self._transmit(transfer, now)
        return True

    def _start(self, vm: Vm, guest: Endpoint, path: str, options: tftp.Options, now: float) -> None:
        gateway = self.settings.gateway_for(guest.address)
        port = self.ports.free(vm.flows, PROTO_UDP, guest.address, guest.port, gateway)
        flow = TftpFlow(
            vm=vm,
            guest=guest,
            host_address=gateway,
            host_port=port,
            deadline=now + DEFAULT_TIMEOUT,
            path=path,
            dst_address=gateway,
            port=port,
        )
        transfer = self._negotiate(flow, options)
        flow.deadline = now + transfer.timeout
        self._transfers[flow] = transfer
        vm.stats.count("tftp_transfer")
        log.debug("TFTP read of %s from port %d", path, port, extra=vm.log_context)
        self.flows.open(flow)

    def _negotiate(self, flow: TftpFlow, options: tftp.Options) -> _Transfer:
        """RFC 2347 §2: the options we take, with the values we take; the rest are left
        out of the OACK, which is how a server declines them."""
        asked = dict(options)
        block_size = _number(asked.get("blksize"), tftp.MIN_BLOCK_SIZE, tftp.MAX_BLOCK_SIZE)
        timeout = _number(asked.get("timeout"), tftp.MIN_TIMEOUT, tftp.MAX_TIMEOUT)
        window = _number(asked.get("windowsize"), tftp.MIN_WINDOW_SIZE, tftp.MAX_WINDOW_SIZE)
        # RFC 2348 §2: the server may answer a smaller block size, here what the MTU carries.
        fits_mtu = family_of(flow.guest.address).udp_room(self.settings.mtu) - _DATA_HEADER
        largest = min(tftp.MAX_BLOCK_SIZE, fits_mtu)
        size = tftp.DEFAULT_BLOCK_SIZE if block_size is None else min(block_size, largest)
        # RFC 7440 §3: likewise a smaller window, here what MAX_WINDOW_BYTES holds.
        fits = max(1, MAX_WINDOW_BYTES // size)
        transfer = _Transfer(
            flow,
            size,
            1 if window is None else min(window, fits),
            DEFAULT_TIMEOUT if timeout is None else float(timeout),
        )
        for name, _ in options:
            if name == "blksize" and block_size is not None:
                transfer.options.append((name, str(size)))
            elif name == "timeout" and timeout is not None:
                transfer.options.append((name, str(timeout)))
            elif name == "windowsize" and window is not None:
                transfer.options.append((name, str(transfer.window_size)))
            elif name == "tsize" and _number(asked[name], 0, None) is not None:
                transfer.tsize = True
                transfer.options.append((name, ""))  # RFC 2349 §3: the size, once known
        return transfer

    def _ack(self, transfer: _Transfer, block: int, now: float) -> None:
        if transfer.state == _OACK:
            if block == 0:  # RFC 2347 §4: the guest takes the options
                self._read(transfer, now)
            return
        if transfer.state != _SENDING:
            return  # nothing of ours in flight: a late duplicate
        acknowledged = (block - transfer.base) % _BLOCK_NUMBERS + 1
        if acknowledged > len(transfer.window):
            return  # a duplicate, or older: the timer resends (Sorcerer's Apprentice)
        transfer.base += acknowledged
        if transfer.final is not None and transfer.base > transfer.final:
            flow = transfer.flow
            flow.vm.stats.count("tftp_transfer_done")
            log.info("TFTP: sent %s, %d bytes", flow.path, transfer.size, extra=flow.vm.log_context)
            self.flows.close(flow)
            return
        self._read(transfer, now)

    # -- the shell's answers -----------------------------------------------------------

    def received(self, flow: TftpFlow, payload: bytes, now: float) -> None:
        """The shell answered the open (the file's size) or a read (the data)."""
        transfer = self._live(flow)
        if transfer is None:
            return
        if transfer.state == _OPENING:
            if len(payload) != FILE_SIZE.size:
                self._fail(transfer, ErrorCode.NOT_DEFINED, "cannot read the file")
                return
            size = transfer.size = FILE_SIZE.unpack(payload)[0]
            if not transfer.options:
                self._read(transfer, now)
                return
            options = tuple(
                (name, str(size) if name == "tsize" else value) for name, value in transfer.options
            )
            transfer.oack = tftp.OptionAck(options).encode()
            transfer.state = _OACK
            self._transmit(transfer, now)
        elif transfer.state == _READING:
            self._window(transfer, payload, now)

    def failed(self, flow: TftpFlow, kind: str, now: float) -> None:
        """The shell could not open or read the file."""
        transfer = self._live(flow)
        if transfer is None:
            return
        if transfer.state == _OPENING and kind == NOT_FOUND:
            flow.vm.stats.count("tftp_not_found")
            self._fail(transfer, ErrorCode.FILE_NOT_FOUND, "file not found")
        elif transfer.state == _OPENING and kind == DENIED:
            flow.vm.stats.drop("tftp_path_refused")
            self._fail(transfer, ErrorCode.ACCESS_VIOLATION, "access violation")
        else:
            self._fail(transfer, ErrorCode.NOT_DEFINED, "cannot read the file")

    def timer(self, flow: TftpFlow, now: float) -> None:
        """``flow``'s deadline passed with nothing acknowledged: send again, or give up."""
        transfer = self._live(flow)
        if transfer is None:
            return
        if transfer.state in (_OPENING, _READING):  # the shell never answered
            self._fail(transfer, ErrorCode.NOT_DEFINED, "cannot read the file")
            return
        transfer.tries += 1
        if transfer.tries > MAX_TRIES:
            flow.vm.stats.count("tftp_timed_out")
            self.flows.close(flow)
            return
        flow.vm.stats.count("tftp_retransmits")
        self._transmit(transfer, now)

    # -- sending -----------------------------------------------------------------------

    def _read(self, transfer: _Transfer, now: float) -> None:
        transfer.state = _READING
        transfer.window = []
        size = transfer.block_size * transfer.window_size
        flow = transfer.flow
        self.flows.actions.append(ReadFlow(flow, (transfer.base - 1) * transfer.block_size, size))
        self.flows.reschedule(flow, now + transfer.timeout)

    def _window(self, transfer: _Transfer, data: bytes, now: float) -> None:
        """The shell's read: the blocks of the next window, the last of them maybe."""
        size = transfer.block_size
        asked = size * transfer.window_size
        data = data[:asked]
        blocks = [data[at : at + size] for at in range(0, len(data), size)]
        if len(data) < asked:
            if len(data) % size == 0:
                blocks.append(b"")  # RFC 1350 §6: a short block ends it, an empty one if need be
            transfer.final = transfer.base + len(blocks) - 1
        transfer.window = [
            tftp.Data((transfer.base + index) % _BLOCK_NUMBERS, block).encode()
            for index, block in enumerate(blocks)
        ]
        transfer.state = _SENDING
        transfer.tries = 0
        self._transmit(transfer, now)

    def _transmit(self, transfer: _Transfer, now: float) -> None:
        """Send what waits for an acknowledgment: the OACK, or the window."""
        flow = transfer.flow
        packets = [transfer.oack] if transfer.state == _OACK else transfer.window
        for packet in packets:
            self.frames.udp(flow.vm, flow.guest, flow.dst_address, flow.port, packet)
        self.flows.reschedule(flow, now + transfer.timeout)

    def _fail(self, transfer: _Transfer, code: ErrorCode, message: str) -> None:
        flow = transfer.flow
        self._error(flow.vm, flow.guest, flow.port, code, message)
        self.flows.close(flow)

    def _error(self, vm: Vm, guest: Endpoint, port: int, code: ErrorCode, message: str) -> None:
        packet = tftp.Error(code, message).encode()
        self.frames.udp(vm, guest, self.settings.gateway_for(guest.address), port, packet)


def relative_path(filename: bytes) -> str | None:
    """The path a request names beneath the root, or None when it may not be served.

    Refused: a name that is not UTF-8, holds a NUL (a string ends at the first, so only a
    caller's own bytes can), starts with "/" (absolute), or has a ".." component; "." and
    empty components fall away.  What the shell meets on the way (links, directories) is
    the shell's to judge.
    """
    if len(filename) > MAX_PATH_LEN or b"\0" in filename or filename.startswith(b"/"):
        return None
    try:
        text = filename.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _number(value: str | None, low: int, high: int | None) -> int | None:
    """A decimal option value within [low, high], else None (the option is declined)."""
    if value is None or not value.isdigit() or not value.isascii() or len(value) > 10:
        return None
    number = int(value)
    if number < low or (high is not None and number > high):
        return None
    return number
