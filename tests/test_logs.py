"""Log lines: namespace, VM and MAC in every one; upstream trouble said once, and its end."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from slirpnet.core.dns import DnsService
from slirpnet.core.dnsrecords import LocalRecords
from slirpnet.core.settings import Upstream
from slirpnet.core.vm import Vm
from slirpnet.logs import configure, namespace_var


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def dns_log() -> Iterator[Lines]:
    lines = Lines()
    logger = logging.getLogger("slirpnet.core.dns")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)


def test_an_upstream_going_down_and_coming_back_is_said_once_each(dns_log: Lines) -> None:
    first, second = Upstream(IPv4Address("127.0.0.1"), 5301), Upstream(IPv4Address("127.0.0.1"))
    service = DnsService(LocalRecords(), (first, second), 1.0)
    for _ in range(3):
        service.upstream_failed(0)
    service.upstream_answered(1)  # was never down
    service.upstream_answered(0)
    service.upstream_answered(0)
    assert [(r.levelname, r.getMessage()) for r in dns_log.records] == [
        ("WARNING", "DNS upstream 127.0.0.1:5301 is not answering"),
        ("INFO", "DNS upstream 127.0.0.1:5301 answers again"),
    ]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_names_namespace_vm_and_mac(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", fmt)
    vm = Vm("unix:/run/vm.sock", id=3)  # the number `slirpnet ctl vms` shows
    logger = logging.getLogger("slirpnet.test")
    token = namespace_var.set("blue")
    try:
        logger.info("VM connected", extra=vm.log_context)
        vm.mac = bytes.fromhex("525400123456")
        logger.info("lease", extra=vm.log_context)
        logger.info("about nobody")
    finally:
        namespace_var.reset(token)
    lines = capsys.readouterr().err.splitlines()
    if fmt == "json":
        fields = [json.loads(line) for line in lines]
        assert [(f["ns"], f["vm"], f["mac"], f["msg"]) for f in fields] == [
            ("blue", "3", "-", "VM connected"),
            ("blue", "3", "52:54:00:12:34:56", "lease"),
            ("blue", "-", "-", "about nobody"),
        ]
    else:
        assert [line.split(" ", 3)[3] for line in lines] == [
            "ns=blue vm=3 mac=- VM connected",
            "ns=blue vm=3 mac=52:54:00:12:34:56 lease",
            "ns=blue vm=- mac=- about nobody",
        ]


def test_held_lines_come_out_on_release_with_their_own_namespace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    held = configure("info", "text", hold=True)
    logger = logging.getLogger("slirpnet.test")
    token = namespace_var.set("blue")
    try:
        logger.info("while starting")
    finally:
        namespace_var.reset(token)
    assert capsys.readouterr().err == ""
    held.release()
    logger.info("after")
    lines = [line.split(" ", 3)[3] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["ns=blue vm=- mac=- while starting", "ns=- vm=- mac=- after"]


def test_held_lines_are_dropped_when_starting_failed(capsys: pytest.CaptureFixture[str]) -> None:
    held = configure("info", "text", hold=True)
    logging.getLogger("slirpnet.test").info("while starting")
    held.discard()
    logging.getLogger("slirpnet.test").warning("after")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING ns=- vm=- mac=- after")
