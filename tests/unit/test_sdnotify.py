"""sd_notify: datagrams on a real NOTIFY_SOCKET (path and abstract), watchdog interval rules.

Method: bind an AF_UNIX datagram socket as systemd would, point a Notifier at it
through the environment it reads, and read what arrives.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from objfs.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    message = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in message.split("\n"))


def test_ready_status_watchdog_stopping_arrive_as_systemd_reads_them(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving")
    got = fields(sock)
    assert got["READY"] == "1" and got["STATUS"] == "serving"
    assert got["MAINPID"] == str(os.getpid())
    assert notifier.watchdog()
    assert fields(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping("bye")
    assert fields(sock) == {"STOPPING": "1", "STATUS": "bye"}
    notifier.close()
    assert not notifier.watchdog()  # closed: nothing sent, no error


def test_abstract_namespace_socket() -> None:
    name = f"objfs-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("hello")
        assert fields(sock) == {"STATUS": "hello"}
    finally:
        sock.close()


def test_outside_systemd_every_call_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_is_a_warning_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not notifier.ready("x")


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process() -> None:
    usec = {"WATCHDOG_USEC": "30000000"}
    assert Notifier(usec).watchdog_interval_s == 15.0
    assert Notifier({**usec, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
    assert Notifier({**usec, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
