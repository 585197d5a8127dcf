"""objfs.cluster.remote — another node's device, for reading fragments over the internal API.

A record names a fragment by device index; in a cluster the node number is in
that index (`objfs.store.types`), and the catalog says where each node's
internal API listens. `RemoteDevice` reads fragments there:

    POST /cluster/v1/read  {"device": D, "ranges": [[offset, length], ...]}
    -> the ranges' bytes, one after another

signed like every internal request. The bytes are checked by the reader
against each fragment's CRC32C, exactly as a local read is: a node that
answers wrongly makes a degraded read, never wrong bytes. Remote devices are
never written: fragments are written by the node that owns the device.
"""

from __future__ import annotations

import functools
import http.client
import json
import time
from collections.abc import Sequence
from typing import final

import trio

from objfs.cluster import peers
from objfs.errors import DeviceError
from objfs.store.device import DeviceStatistics, WriteData
from objfs.store.types import device_node_number

MAX_READ_BYTES = 64 << 20  # one request's ranges at most (a node refuses more)
_TIMEOUT_S = 30.0


@final
class RemoteDevice:
    def __init__(self, device_index: int, api_address: str, secret: str) -> None:
        self.device_index = device_index
        self.api_address = api_address
        node = device_node_number(device_index)
        self.path = f"node {node} at {api_address}, device {device_index}"
        self.size_bytes = 0  # unknown here, and never needed: nothing allocates on it
        self._secret = secret
        self._limiter = trio.CapacityLimiter(4)
        self.reads = 0
        self.read_bytes = 0
        self.io_errors = 0

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return (await self.read_many([(offset_bytes, length_bytes)]))[0]

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        """Raises DeviceError: the node cannot be reached or refused."""
        body = json.dumps({"device": self.device_index, "ranges": [list(r) for r in requests]})
        try:
            raw = await trio.to_thread.run_sync(
                functools.partial(self._post, body.encode()), limiter=self._limiter
            )
        except (OSError, http.client.HTTPException, DeviceError) as exc:
            self.io_errors += 1
            raise DeviceError(f"{self.path}: {exc}") from None
        expected = sum(length for _, length in requests)
        if len(raw) != expected:
            self.io_errors += 1
            raise DeviceError(f"{self.path}: {len(raw)} bytes answered, {expected} asked")
        self.reads += 1
        self.read_bytes += expected
        parts, position = [], 0
        for _, length in requests:
            parts.append(raw[position : position + length])
            position += length
        return parts

    def _post(self, body: bytes) -> bytes:
        target = "/cluster/v1/read"
        when = int(time.time())
        host, _, port = self.api_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=_TIMEOUT_S)
        try:
            connection.request(
                "POST",
                target,
                body=body,
                headers={
                    "Content-Type": "application/json",
                    peers.TIME_HEADER: str(when),
                    peers.SIGNATURE_HEADER: peers.signature(
                        self._secret, "POST", target, body, when
                    ),
                },
            )
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise DeviceError(f"answered {response.status}: {data[:200]!r}")
            return data
        finally:
            connection.close()

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        raise DeviceError(f"{self.path}: another node's device is written by that node")

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        raise DeviceError(f"{self.path}: another node's device is written by that node")

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(
            path=self.path,
            size_bytes=0,
            reads=self.reads,
            read_bytes=self.read_bytes,
            writes=0,
            written_bytes=0,
            flushes=0,
            direct_io=False,
            io_errors=self.io_errors,
        )
