"""The embedding API, as a user's own trio program uses it: frames in, frames out."""

from __future__ import annotations

import pytest
import trio
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

import slirpnet
from slirpnet.shell.port import SEND_NOW_BYTES

VM_MAC = "52:54:00:00:00:42"
GATEWAY_MAC = "52:55:0a:00:02:02"


def discover() -> bytes:
    return bytes(
        Ether(src=VM_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex(VM_MAC.replace(":", "")), xid=0x1234)
        / DHCP(options=[("message-type", "discover"), "end"])
    )


def arp_request() -> bytes:
    return bytes(
        Ether(src=VM_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=VM_MAC, psrc="10.0.2.15", pdst="10.0.2.2")
    )


async def receive_one(port: slirpnet.Port) -> Ether:
    with trio.fail_after(5):
        (frame,) = await port.receive()
    return Ether(frame)


async def test_dhcp_discover_and_arp_request_get_their_replies() -> None:
    settings = slirpnet.NetworkSettings(search=("corp.test",))
    async with (
        slirpnet.open_namespace(settings, name="mine") as namespace,
        namespace.attach("vm1") as port,
    ):
        port.feed(discover())
        offer = await receive_one(port)
        assert offer[BOOTP].xid == 0x1234
        assert offer[BOOTP].yiaddr == "10.0.2.15"
        options: dict[str, object] = dict(
            option for option in offer[DHCP].options if isinstance(option, tuple)
        )
        assert options["message-type"] == 2  # OFFER
        assert options["router"] == "10.0.2.2"
        assert options["name_server"] == "10.0.2.3"

        port.feed(arp_request())
        reply = await receive_one(port)
        assert (reply[ARP].op, reply[ARP].psrc, reply[ARP].hwsrc) == (2, "10.0.2.2", GATEWAY_MAC)
        assert (reply[ARP].pdst, reply[ARP].hwdst, reply[Ether].dst) == (
            "10.0.2.15",
            VM_MAC,
            VM_MAC,
        )

        assert port.stats.frames_in == 2
        assert port.stats.frames_out == 2
        assert [p.name for p in namespace.ports] == ["vm1"]


async def test_junk_is_dropped_and_counted_never_raised() -> None:
    async with slirpnet.open_namespace() as namespace, namespace.attach("vm1") as port:
        port.feed_many([b"", b"\x00" * 13, bytes(Ether(src=VM_MAC) / IP() / b"x")[:20]])
        port.feed(arp_request())  # and the port still works after
        reply = await receive_one(port)
        assert reply[ARP].op == 2
        assert sum(port.stats.drops.values()) == 3


async def test_two_vms_of_a_namespace_reach_each_other() -> None:
    other_mac = "52:54:00:00:00:43"
    async with (
        slirpnet.open_namespace() as namespace,
        namespace.attach("vm1") as one,
        namespace.attach("vm2") as two,
    ):
        one.feed(arp_request())  # broadcast: to the gateway and to vm2
        assert (await receive_one(one))[ARP].op == 2
        assert (await receive_one(two))[ARP].pdst == "10.0.2.2"
        frame = bytes(Ether(src=other_mac, dst=VM_MAC) / IP(src="10.0.2.16", dst="10.0.2.15"))
        two.feed(frame)
        assert bytes(await receive_one(one)) == frame


async def test_receive_after_the_namespace_closed_raises_closed() -> None:
    async with slirpnet.open_namespace() as namespace, namespace.attach("vm1") as port:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await port.receive()
    port.feed(arp_request())  # ignored: nothing to run it
    assert port.stats.frames_in == 0


async def test_frames_go_out_at_once_only_with_nothing_queued_ahead() -> None:
    """``Port.send_now`` (a transport's non-blocking send) takes frames from the flush
    while the queue is empty, up to SEND_NOW_BYTES; the rest, and all that follows
    while anything is queued, waits for ``receive`` in order."""
    async with slirpnet.open_namespace() as namespace, namespace.attach("vm1") as port:
        sent: list[bytes] = []
        room = 2

        def send_now(frame: bytes) -> bool:
            nonlocal room
            if room == 0:
                return False
            room -= 1
            sent.append(frame)
            return True

        port.send_now = send_now
        frames = [bytes([n]) * 100 for n in range(6)]
        port.enqueue(frames[:4])
        assert sent == frames[:2]  # then the VM's queue was full
        room = 10
        port.enqueue(frames[4:])  # frames 2 and 3 are queued: these go behind them
        assert sent == frames[:2]
        assert await port.receive() == frames[2:]
        big = [bytes(SEND_NOW_BYTES // 2 + 1)] * 3
        port.enqueue(big)
        assert sent == frames[:2] + big[:2]  # at most SEND_NOW_BYTES (and the frame over it)
        assert await port.receive() == big[2:]
