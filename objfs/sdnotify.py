"""objfs.sdnotify — systemd's notify protocol, spoken directly (no dependency).

The service manager passes `NOTIFY_SOCKET` (a path, or `@name` in the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` and `WATCHDOG_PID`. The
node sends one datagram per state change: `READY=1` once every service is up,
`WATCHDOG=1` from its event loop (so a wedged loop misses the deadline and gets
restarted), `STOPPING=1` when it starts to stop, and `STATUS=...` lines for
`systemctl status`. Outside systemd every call is a no-op.

A send never blocks the loop: the socket is non-blocking and a datagram that
does not fit (the manager is not reading) is dropped with a warning — the next
watchdog ping is the retry.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """The sending end of `NOTIFY_SOCKET`, or nothing when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = None
        self._socket: socket.socket | None = None
        path = env.get("NOTIFY_SOCKET", "")
        if path and (path.startswith("/") or path.startswith("@")):
            # "@name" is Linux's abstract namespace: a leading NUL byte on the wire.
            self.address = "\0" + path[1:] if path.startswith("@") else path
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        elif path:
            log.warning("NOTIFY_SOCKET=%r is not a socket path; not notifying systemd", path)
        self.watchdog_interval_s = _watchdog_interval_s(env)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields in one datagram; False when not sent."""
        if self._socket is None or self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            self._socket.sendto(message, self.address)
        except BlockingIOError:
            log.warning("systemd is not reading its notify socket; dropped %s", fields[0])
            return False
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half the manager's watchdog timeout (as sd_watchdog_enabled advises), if it
    is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (a parent that exec'd us keeps it)
    return int(usec) / 1e6 / 2
