"""The directories the server makes for its sockets and captures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from slirpnet.config import ConfigError
from slirpnet.server import bind_unix
from slirpnet.shell.paths import ensure_directory, socket_directory_mode


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_missing_directories_are_made_with_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ensure_directory(tmp_path / "a" / "b", 0o700, "pcap")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    ensure_directory(tmp_path / "open", 0o700, "pcap")
    assert mode(tmp_path / "open") == 0o755


def test_a_file_in_the_way_is_an_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as info:
        ensure_directory(tmp_path / "file" / "sub", 0o700, "listen")
    assert info.value.key == "listen" and "file" in str(info.value)


def test_a_socket_directory_lets_in_whom_the_socket_does() -> None:
    assert socket_directory_mode(0o600) == 0o700
    assert socket_directory_mode(0o660) == 0o750
    assert socket_directory_mode(0o666) == 0o755


def test_a_unix_socket_in_a_missing_directory_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "run" / "slirpnet" / "vm.sock"
    sock = bind_unix(path, socket.SOCK_STREAM, mode=0o660)
    sock.close()
    assert mode(path.parent) == 0o750 and mode(path) == 0o660
