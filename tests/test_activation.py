"""Socket activation's pieces: which variables count, and what each inherited socket serves."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from slirpnet.config import Address, ConfigError, NamespaceConfig, ServerConfig
from slirpnet.core.settings import NetworkSettings
from slirpnet.shell.activation import address_of, inherited_sockets, with_inherited_listeners


def test_variables_for_another_process_are_ignored_and_consumed() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert inherited_sockets(environ) == {}
    assert environ == {}


def test_a_bad_count_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^LISTEN_FDS: 'two'"):
        inherited_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"})


def test_what_each_socket_serves(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
        stream.bind(str(tmp_path / "vm.sock"))
        assert address_of(stream) == Address("unix", path=str(tmp_path / "vm.sock"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
        dgram.bind(str(tmp_path / "dgram.sock"))
        assert address_of(dgram) == Address("unixgram", path=str(tmp_path / "dgram.sock"))
    with socket.create_server(("127.0.0.1", 0)) as tcp:
        assert address_of(tcp) == Address("tcp", host="127.0.0.1", port=tcp.getsockname()[1])
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(ConfigError, match="cannot serve"),
    ):
        address_of(udp)


def test_inherited_sockets_become_listeners_unless_listeners_are_given() -> None:
    vm, control = Address("unix", path="/run/vm.sock"), Address("unix", path="/run/ctl.sock")
    inherited = dict.fromkeys((vm, control), socket.socket())
    bare = ServerConfig((NamespaceConfig("default", NetworkSettings()),), control=control)
    (namespace,) = with_inherited_listeners(bare, inherited).namespaces
    assert namespace.listen == (vm,)
    given = Address("tcp", host="127.0.0.1", port=5555)
    explicit = ServerConfig((NamespaceConfig("default", NetworkSettings(), listen=(given,)),))
    assert with_inherited_listeners(explicit, inherited) == explicit
    for sock in inherited.values():
        sock.close()
