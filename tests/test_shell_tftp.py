"""The shell's half of TFTP: files opened beneath the root on real directories, links
followed only within it, and whole transfers through a namespace (the embedding API)."""

from __future__ import annotations

import errno
import itertools
import os
import struct
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.tftp import TFTP, TFTP_ACK, TFTP_RRQ, TFTP_Option, TFTP_Options

import slirpnet
from slirpnet.control import views
from slirpnet.control.metrics import SlirpnetCollector
from slirpnet.shell.tftpfiles import MAX_LINKS, OutsideRootError, open_beneath, read_at

VM_MAC = "52:54:00:00:00:42"
GATEWAY_MAC = "52:55:0a:00:02:02"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A TFTP root, with a secret beside it that no request may reach."""
    (tmp_path / "secret").write_bytes(b"the host's")
    top = tmp_path / "root"
    (top / "boot" / "efi").mkdir(parents=True)
    (top / "boot" / "kernel").write_bytes(b"kernel bytes")
    (top / "boot" / "efi" / "grub.efi").write_bytes(b"grub")
    return top


def read_beneath(root: Path, path: str) -> bytes:
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_beneath(root_fd, path)
    finally:
        os.close(root_fd)
    try:
        return read_at(fd, 0, 1 << 20)
    finally:
        os.close(fd)


def test_a_file_and_a_file_in_a_directory(root: Path) -> None:
    assert read_beneath(root, "boot/kernel") == b"kernel bytes"
    assert read_beneath(root, "boot/efi/grub.efi") == b"grub"


def test_links_within_the_root_are_followed(root: Path) -> None:
    (root / "vmlinuz").symlink_to("boot/kernel")
    (root / "boot" / "up").symlink_to("../boot/efi")  # ".." that stays within
    (root / "efi").symlink_to("boot/efi")
    (root / "chain").symlink_to("vmlinuz")
    assert read_beneath(root, "vmlinuz") == b"kernel bytes"
    assert read_beneath(root, "boot/up/grub.efi") == b"grub"
    assert read_beneath(root, "efi/grub.efi") == b"grub"
    assert read_beneath(root, "chain") == b"kernel bytes"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("absolute", "/etc/passwd"),
        ("absolute-into-root", "ROOT/boot/kernel"),  # absolute even when it lands inside
        ("up", "../secret"),
        ("deep", "boot/../../secret"),
        ("dir", ".."),
    ],
)
def test_links_out_of_the_root_are_refused(root: Path, name: str, target: str) -> None:
    (root / name).symlink_to(target.replace("ROOT", str(root)))
    path = f"{name}/secret" if name == "dir" else name
    with pytest.raises(OutsideRootError):
        read_beneath(root, path)


def test_a_link_loop_is_refused(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(OutsideRootError):
        read_beneath(root, "a")
    chain = [f"l{i}" for i in range(MAX_LINKS + 2)]
    for here, there in itertools.pairwise(chain):
        (root / here).symlink_to(there)
    (root / chain[-1]).symlink_to("boot/kernel")
    with pytest.raises(OutsideRootError):
        read_beneath(root, chain[0])
    assert read_beneath(root, chain[2]) == b"kernel bytes"  # MAX_LINKS links: fine


def test_only_regular_files(root: Path) -> None:
    os.mkfifo(root / "fifo")  # opened without blocking, then refused
    for path in ("boot", "fifo", "boot/efi/"):
        with pytest.raises(PermissionError):
            read_beneath(root, path)


@pytest.mark.parametrize("path", ["missing", "boot/missing", "boot/kernel/below"])
def test_missing(root: Path, path: str) -> None:
    with pytest.raises(OSError) as raised:
        read_beneath(root, path)
    assert raised.value.errno in (errno.ENOENT, errno.ENOTDIR)


def test_read_at_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(bytes(range(256)) * 4)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert read_at(fd, 1000, 100) == bytes(range(256))[1000 % 256 : 1000 % 256 + 24]
        assert read_at(fd, 10, 5) == bytes(range(10, 15))
        assert read_at(fd, 2000, 5) == b""
    finally:
        os.close(fd)


# -- whole transfers through a namespace -------------------------------------------


def rrq_frame(name: bytes, sport: int = 2000, **options: str) -> bytes:
    request = TFTP() / TFTP_RRQ(filename=name, mode=b"octet")
    if options:
        pairs = [TFTP_Option(oname=k.encode(), value=v.encode()) for k, v in options.items()]
        request /= TFTP_Options(options=pairs)
    return udp_frame(69, request, sport)


def udp_frame(port: int, payload: object, sport: int = 2000) -> bytes:
    return bytes(
        Ether(src=VM_MAC, dst=GATEWAY_MAC)
        / IP(src="10.0.2.15", dst="10.0.2.2")
        / UDP(sport=sport, dport=port)
        / payload  # type: ignore[operator]
    )


async def tftp_packets(port: slirpnet.Port) -> list[tuple[int, bytes]]:
    """(source port, TFTP packet) of the frames the namespace sends next."""
    with trio.fail_after(5):
        frames = await port.receive()
    return [(Ether(f)[UDP].sport, bytes(Ether(f)[UDP].payload)) for f in frames]


async def fetch(port: slirpnet.Port, name: bytes, **options: str) -> tuple[bytes, list[bytes]]:
    """Read a file as a guest would: the content, and every packet received."""
    port.feed(rrq_frame(name, **options))
    content, seen = b"", []
    while True:
        packets = await tftp_packets(port)
        seen += [packet for _, packet in packets]
        tid, last = packets[-1]
        opcode, number = struct.unpack_from("!HH", last)
        if opcode == 5:
            return content, seen
        if opcode == 6:
            number = 0
        else:
            content += b"".join(packet[4:] for _, packet in packets)
        port.feed(udp_frame(tid, TFTP() / TFTP_ACK(block=number)))
        if opcode == 3 and len(last) - 4 < int(options.get("blksize", "512")):
            return content, seen


async def test_a_transfer_from_disk(root: Path) -> None:
    kernel = os.urandom(100_000)
    (root / "boot" / "kernel").write_bytes(kernel)
    settings = slirpnet.NetworkSettings(tftp_root=str(root))
    async with slirpnet.open_namespace(settings) as namespace, namespace.attach("vm") as port:
        content, seen = await fetch(port, b"boot/kernel", blksize="1432", tsize="0", windowsize="8")
        assert content == kernel
        assert seen[0] == b"\x00\x06blksize\x001432\x00tsize\x00100000\x00windowsize\x008\x00"
        await trio.sleep(0.01)
        assert namespace.segment.tftp.flows_of(port.vm) == []
        assert len(namespace.host) == 0  # nothing held open


async def test_refusals_from_disk(root: Path) -> None:
    (root / "escape").symlink_to("../secret")
    settings = slirpnet.NetworkSettings(tftp_root=str(root))
    async with slirpnet.open_namespace(settings) as namespace, namespace.attach("vm") as port:
        for name, code in [(b"escape", 2), (b"missing", 1), (b"../secret", 2), (b"boot", 2)]:
            content, seen = await fetch(port, name)
            assert (content, seen[-1][:4]) == (b"", struct.pack("!HH", 5, code)), name
        assert port.stats.drops["tftp_path_refused"] == 3
        assert port.stats.events["tftp_not_found"] == 1


async def test_a_missing_root_is_an_error_to_the_guest(tmp_path: Path) -> None:
    settings = slirpnet.NetworkSettings(tftp_root=str(tmp_path / "nowhere"))
    async with slirpnet.open_namespace(settings) as namespace, namespace.attach("vm") as port:
        _, seen = await fetch(port, b"f")
        assert seen == [struct.pack("!HH", 5, 0) + b"cannot read the file\0"]


async def test_a_transfer_under_way_in_the_views_and_metrics(root: Path) -> None:
    """``slirpnet ctl flows`` and the metrics show a read as a TFTP flow, its file as host."""
    settings = slirpnet.NetworkSettings(tftp_root=str(root))
    async with slirpnet.open_namespace(settings) as namespace, namespace.attach("vm") as port:
        port.feed(rrq_frame(b"boot/kernel", tsize="0"))
        (packet,) = await tftp_packets(port)  # the OACK: the transfer waits for ACK 0
        (flow,) = views.flows(port.vm)
        view = views.flow_view(flow, 0.0)
        assert view["protocol"] == "tftp" and view["host"] == "boot/kernel"
        assert view["destination"] == f"10.0.2.2:{packet[0]}"
        assert views.vm_view(namespace, port)["flows"]["tftp"] == 1
        samples = [
            sample
            for metric in SlirpnetCollector({"default": namespace}).collect()
            if metric.name == "slirpnet_flows"
            for sample in metric.samples
        ]
        assert [(s.labels["protocol"], s.labels["state"], s.value) for s in samples] == [
            ("tftp", "reading", 1.0)
        ]
