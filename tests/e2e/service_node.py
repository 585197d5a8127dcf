"""`objfs serve` as systemd would run it: a child process with a real NOTIFY_SOCKET.

`ServiceNode` binds an AF_UNIX datagram socket, starts `python -m objfs serve`
with NOTIFY_SOCKET and WATCHDOG_USEC pointing at it, and records every
notification with the time it arrived. `wait_for("READY")` returns once the
node said so; `runtime()` reads the DATA_DIR/node.json it writes (its listener
addresses and admin token).

Helpers for the fault tests beside it: `objfs(..., environ=...)` runs the CLI
with extra variables, `s3_client` is boto3 on path-style addressing, and
`mounted` reads /proc/mounts (which, unlike os.path.ismount, also shows the
stale mount a killed node leaves behind).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

ROOT_KEY = "OBJFSSERVICETESTKEY0"
ROOT_SECRET = "service-test-secret-key-0123456789abcdefgh"
WATCHDOG_USEC = 2_000_000  # the node pings every second


def env() -> dict[str, str]:
    return {
        **os.environ,
        "OBJFS_ROOT_ACCESS_KEY": ROOT_KEY,
        "OBJFS_ROOT_SECRET_KEY": ROOT_SECRET,
        "PYTHONUNBUFFERED": "1",
    }


def objfs(
    *args: str, timeout: float = 120, environ: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "objfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env(), **(environ or {})},
    )


def s3_client(endpoint: str, **options: Any) -> Any:
    """boto3 on path-style addressing, no retries (a refused request must show)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ROOT_KEY,
        aws_secret_access_key=ROOT_SECRET,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **options),
    )


def mounted(path: str) -> bool:
    """Whether anything is mounted at `path`, stale FUSE mounts included."""
    with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
        return any(line.split()[1].replace("\\040", " ") == path for line in mounts if line.strip())


def write_config(directory: str, extra: str = "", *, graceful_timeout_ms: int = 10_000) -> str:
    """Any free ports (tests run beside each other and beside a node on 9000/9001)."""
    path = os.path.join(directory, "objfs.toml")
    with open(path, "w", encoding="utf-8") as file:
        file.write(
            '[s3]\naddress = "127.0.0.1:0"\n\n'
            '[node]\nadmin_address = "127.0.0.1:0"\n'
            f"graceful_timeout_ms = {graceful_timeout_ms}\n" + extra
        )
    return path


class ServiceNode:
    def __init__(self, directory: str, data: str, args: list[str], log_name: str) -> None:
        self.data = data
        self.notify_path = os.path.join(directory, f"{log_name}.notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.notify_path)
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.log_path = os.path.join(directory, f"{log_name}.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "objfs", "serve", "--data", data, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **env(),
                    "NOTIFY_SOCKET": self.notify_path,
                    "WATCHDOG_USEC": str(WATCHDOG_USEC),
                },
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in raw.decode().split("\n") if line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def sent(self, key: str) -> list[float]:
        """When each notification carrying `key` arrived."""
        with self._lock:
            return [at for at, fields in self.messages if key in fields]

    def wait_for(self, key: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if arrived := self.sent(key):
                return arrived[0]
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"no {key}=1 within {timeout} s:\n{self.log()}")

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of `pattern` in the node's output, as soon as it is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.log()):
                return found
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.002)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def runtime(self) -> dict[str, Any]:
        with open(os.path.join(self.data, "node.json"), encoding="utf-8") as file:
            loaded: dict[str, Any] = json.load(file)
            return loaded

    def admin(self, path: str, *, token: bool = True) -> tuple[int, bytes]:
        runtime = self.runtime()
        headers = {"Authorization": f"Bearer {runtime['token']}"} if token else {}
        request = urllib.request.Request(runtime["admin"][0] + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._stop.set()
        self._reader.join(5)
        self.socket.close()
