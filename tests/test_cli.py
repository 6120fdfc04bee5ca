"""``slirpnet serve``: the QEMU arguments it prints, and how it fails."""

from __future__ import annotations

import argparse
import gc
import re
import shlex
import socket
from pathlib import Path

import pytest

from slirpnet.cli import build_parser, main, qemu_lines
from slirpnet.config import Address, ServerConfig, namespace_from_values
from slirpnet.server import qemu_arguments


def test_unix_arguments_escape_commas_and_quote_for_the_shell() -> None:
    printed = qemu_arguments(Address("unix", path="/run/a b,c/vm.sock"))
    assert shlex.split(printed) == [
        "-netdev",
        "stream,id=net0,server=off,addr.type=unix,addr.path=/run/a b,,c/vm.sock",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]


def test_tcp_and_dgram_arguments() -> None:
    assert shlex.split(qemu_arguments(Address("tcp", host="127.0.0.1", port=7000)))[1] == (
        "stream,id=net0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=7000"
    )
    assert shlex.split(qemu_arguments(Address("unixgram", path="/run/d")))[1] == (
        "dgram,id=net0,local.type=unix,local.path=/run/d.qemu,remote.type=unix,remote.path=/run/d"
    )


def test_a_line_per_listener_and_connect_address_where_qemu_listens() -> None:
    namespace = namespace_from_values(
        "lab", {"listen": ["unix:/run/l.sock"], "connect": ["tcp:127.0.0.1:7001"]}
    )
    lines = qemu_lines(ServerConfig((namespace,)))
    macs = [line.rpartition(",mac=")[2] for line in lines]
    assert lines == [
        "lab: qemu-system-x86_64 ... -netdev stream,id=net0,server=off,addr.type=unix,"
        f"addr.path=/run/l.sock -device virtio-net-pci,netdev=net0,mac={macs[0]}",
        "lab: qemu-system-x86_64 ... -netdev stream,id=net0,server=on,addr.type=inet,"
        f"addr.host=127.0.0.1,addr.port=7001 -device virtio-net-pci,netdev=net0,mac={macs[1]}",
    ]
    # VMs of a shared network need a MAC each: the line shows where, with one of
    # QEMU's prefix that is not its default, the same from one start to the next.
    assert all(re.fullmatch("52:54:00(:[0-9a-f]{2}){3}", mac) for mac in macs)
    assert len(set(macs)) == 2 and "52:54:00:12:34:56" not in macs
    assert qemu_lines(ServerConfig((namespace,))) == lines


def test_an_isolated_namespace_s_line_needs_no_mac() -> None:
    namespace = namespace_from_values("lab", {"listen": ["unix:/run/l.sock"], "isolate": True})
    (line,) = qemu_lines(ServerConfig((namespace,)))
    assert line.endswith(" -device virtio-net-pci,netdev=net0")


def test_a_socket_held_by_a_live_server_is_one_line_naming_listen_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vm.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(SystemExit) as info:
            main(["serve", "--listen", f"unix:{path}", "--dns-upstream", "127.0.0.1:9"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    # Nothing printed: the QEMU line comes only once the server really listens.
    assert captured.out == ""
    last = captured.err.strip().splitlines()[-1]
    assert last == f"slirpnet: error: listen: {path} is in use by a running server"


def test_a_relative_path_is_printed_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    netdev = shlex.split(qemu_arguments(Address("unix", path="vm.sock")))[1]
    assert netdev.endswith(f",addr.path={tmp_path}/vm.sock")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit status and stderr of ``slirpnet ARGV`` that fails."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["serve", "--static-leases", "x"],
            "unrecognized arguments: --static-leases x (did you mean --static-lease?)",
        ),
        (["serve", "--mtu"], "argument --mtu: expected one argument"),
        (["serve", "--max-flow", "5"], "unrecognized arguments: --max-flow 5 (did you mean "),
        (["srve"], "invalid choice: 'srve' (choose from 'serve', 'ctl') (did you mean serve?)"),
        (["serve", "--metrics", "9464"], "metrics: '9464' is not HOST:PORT, like 127.0.0.1:9464"),
        (["serve", "--mtu", "big"], "mtu: 'big' is not a whole number"),
        (["serve", "--user", "smb=/srv"], "user.smb: slirpnet has no SMB server"),
        (["serve", "--net6", "fd00::/48"], "net6: fd00::/48 is not a /64, which SLAAC needs"),
        (
            ["serve", "--vm-hostnames", "x"],
            "unrecognized arguments: --vm-hostnames x (did you mean --vm-hostname?)",
        ),
        (["ctl", "forward", "del", "x"], "invalid choice: 'del'"),
    ],
)
def test_every_mistake_is_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("slirpnet: error: ") and line in err, err


def test_an_error_found_while_binding_is_the_only_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No INFO line before it: the log is held until the server is up."""
    path = tmp_path / "vm.sock"
    path.write_text("not a socket")
    argv = ["serve", "--listen", f"unix:{path}", "--control", "none"]
    code, err = run_main([*argv, "--dns-upstream", "127.0.0.1:9"], capsys)
    assert code == 2
    assert err == f"slirpnet: error: listen: {path} exists and is not a socket\n"


def test_serve_help_is_grouped_with_examples_and_marks_repeatable_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    serve = commands.choices["serve"]
    groups = {group.title: group._group_actions for group in serve._action_groups}
    assert list(groups) == [
        "positional arguments",
        "options",
        "VMs",
        "network",
        "DHCP",
        "network boot",
        "DNS",
        "forwards",
        "from QEMU",
        "limits",
        "operation",
        "other",
    ]
    assert groups["other"] == [] and groups["positional arguments"] == []
    assert [a.dest for a in groups["options"]] == ["help"]
    for action in serve._actions:
        repeatable = isinstance(action, argparse._AppendAction)
        assert (action.help or "").endswith("(repeatable)") == repeatable, action.dest
    assert {a.dest for a in serve._actions if isinstance(a, argparse._AppendAction)} >= {
        "listen",
        "forward",
        "static_lease",
        "dns_record",
        "dns_upstream",
        "deny",
        "vm_hostname",
    }
    # The new settings where one looks for them.
    dests = {title: [a.dest for a in actions] for title, actions in groups.items()}
    assert {"net6", "gateway6", "no_ipv6"} <= set(dests["network"])
    assert {"hostname", "vm_hostname"} <= set(dests["DHCP"])
    assert dests["network boot"] == ["tftp", "bootfile", "tftp_server_name"]
    assert "dns6" in dests["DNS"] and dests["from QEMU"] == ["user"]
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "\nDHCP:\n" in text and "\nexamples:\n" in text
    assert "other:" not in text  # an empty group is not shown
    assert "  slirpnet serve --forward tcp::2222-:22" in text


def test_serve_leaves_what_start_up_made_to_no_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen: list[int] = []
    monkeypatch.setattr("slirpnet.cli.trio.run", lambda *args: frozen.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        argv = [
            "serve",
            "--listen",
            f"unix:{tmp_path / 'vm.sock'}",
            "--dns-upstream",
            "127.0.0.1:9",
        ]
        assert main(argv) == 0
    finally:
        gc.unfreeze()
    assert frozen[0] > 10_000  # the modules' objects, at least
