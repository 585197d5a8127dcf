"""objfs.cluster.remote — another node's device: fragments read and written through its node.

A record names a fragment by device index; in a cluster the node number is in
that index (`objfs.store.types`), and the catalog says where each node's
internal API listens. `RemoteDevice` reads fragments there:

    POST /cluster/v1/read  {"device": D, "ranges": [[offset, length], ...]}
    -> the ranges' bytes, one after another

    POST /cluster/v1/write?device=D&size=N&crc=C   the fragment's bytes
    -> {"offset": O, "length": L}

    POST /cluster/v1/heal  {"segments": [segment id, ...]}  -> {"queued": N}

    POST /cluster/v1/forget  {"extents": [[device, offset, length], ...]}  -> {"freed": N}

signed like every internal request. The bytes read are checked by the reader
against each fragment's CRC32C, exactly as a local read is: a node that
answers wrongly makes a degraded read, never wrong bytes. A write is not an
offset chosen here: the owning node allocates the extent, checks the CRC,
writes, fdatasyncs, keeps the extent pending (objfs.cluster.pending) and
answers with it. The generic `write` of a device is refused. A fragment a
reader finds damaged is healed by its own node, which is told so (`heal`).
Fragments written for a stripe that no record will name (its write failed or
was given up) are freed by their node when told so (`forget`), instead of an
hour later.

A node that cannot be reached (refused, reset, silent for `TIMEOUT_S`), or
that answers a write with 503 (still catching up after a start, stopped
applying the log, or its device is down), is reported through
`unreachable(node number)`, so reads and placement skip it for a while
instead of waiting on it again (objfs.cluster.member).
"""

from __future__ import annotations

import functools
import http.client
import json
from collections.abc import Callable, Sequence
from typing import final

import trio

from objfs.cluster import peers
from objfs.errors import DeviceError, NoSpace
from objfs.store.device import DeviceStatistics, WriteData
from objfs.store.types import Extent, device_node_number

MAX_READ_BYTES = 64 << 20  # one request's ranges at most (a node refuses more)
MAX_FRAGMENT_BYTES = 8 << 20  # one written fragment at most (a node refuses more)
MAX_HEAL_HINTS = 1000  # segments named in one heal request at most
MAX_FORGET_EXTENTS = 1000  # extents named in one forget request at most
TIMEOUT_S = 5.0  # a node silent this long (connect, or between bytes) counts as down


class _Refused(DeviceError):
    """The node answered, with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"answered {status}: {message}")
        self.status = status


@final
class RemoteDevice:
    def __init__(
        self,
        device_index: int,
        api_address: str,
        secret: str,
        unreachable: Callable[[int], None] = lambda node: None,
    ) -> None:
        self.device_index = device_index
        self.node_number = device_node_number(device_index)
        self._unreachable = unreachable
        self.api_address = api_address
        self.path = f"node {self.node_number} at {api_address}, device {device_index}"
        self.size_bytes = 0  # unknown here, and never needed: its node allocates
        self._secret = secret
        self._limiter = trio.CapacityLimiter(4)
        self.reads = 0
        self.read_bytes = 0
        self.writes = 0
        self.written_bytes = 0
        self.io_errors = 0

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return (await self.read_many([(offset_bytes, length_bytes)]))[0]

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        """Raises DeviceError: the node cannot be reached or refused."""
        body = json.dumps({"device": self.device_index, "ranges": [list(r) for r in requests]})
        raw = await self._call("/cluster/v1/read", body.encode(), "application/json")
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

    async def store(self, payload: bytes, crc: int) -> Extent:
        """Write one fragment to this device through its node; the extent it took.

        Raises:
            NoSpace: the device is full.
            DeviceError: the node cannot be reached, or refused.
        """
        target = f"/cluster/v1/write?device={self.device_index}&size={len(payload)}&crc={crc}"
        try:
            answer = json.loads(await self._call(target, payload, "application/octet-stream"))
            extent = Extent(self.device_index, int(answer["offset"]), int(answer["length"]))
            if extent.length_bytes < len(payload) or extent.offset_bytes < 0:
                raise ValueError(f"{extent} cannot hold {len(payload)} bytes")
        except _Refused as exc:
            if exc.status == 507:
                raise NoSpace(f"{self.path}: {exc}") from None
            if exc.status == 503:  # catching up, stopped applying, or its device is down:
                self._unreachable(self.node_number)  # place without it for a while
            raise
        except (ValueError, KeyError, TypeError) as exc:
            self.io_errors += 1
            raise DeviceError(f"{self.path}: a malformed answer to a write: {exc!r}") from None
        self.writes += 1
        self.written_bytes += len(payload)
        return extent

    async def report_damage(self, segment_ids: list[int]) -> int:
        """Tell this device's node that reads found its fragments of these segments
        damaged (it heals its own); how many it queued.

        Raises:
            DeviceError: the node cannot be reached, or refused.
        """
        body = json.dumps({"segments": segment_ids}).encode()
        try:
            return int(
                json.loads(await self._call("/cluster/v1/heal", body, "application/json"))["queued"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"{self.path}: a malformed answer to a heal: {exc!r}") from None

    async def forget(self, extents: list[Extent]) -> int:
        """Tell this device's node that fragments it wrote for this node's stripes
        will never be named by a record (free them, if still pending); how many
        it freed.

        Raises:
            DeviceError: the node cannot be reached, or refused.
        """
        body = json.dumps(
            {"extents": [[e.device_index, e.offset_bytes, e.length_bytes] for e in extents]}
        ).encode()
        try:
            return int(
                json.loads(await self._call("/cluster/v1/forget", body, "application/json"))[
                    "freed"
                ]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"{self.path}: a malformed answer to a forget: {exc!r}") from None

    async def _call(self, target: str, body: bytes, content_type: str) -> bytes:
        try:
            return await trio.to_thread.run_sync(
                functools.partial(self._post, target, body, content_type), limiter=self._limiter
            )
        except _Refused as exc:
            self.io_errors += 1
            raise _Refused(exc.status, f"{self.path}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            self.io_errors += 1
            self._unreachable(self.node_number)
            raise DeviceError(f"{self.path}: {exc!r}") from None

    def _post(self, target: str, body: bytes, content_type: str) -> bytes:
        host, _, port = self.api_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
        try:
            connection.request(
                "POST",
                target,
                body=body,
                headers={
                    "Content-Type": content_type,
                    **peers.signed_headers(self._secret, "POST", target, body),
                },
            )
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise _Refused(response.status, repr(data[:200]))
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
            writes=self.writes,
            written_bytes=self.written_bytes,
            flushes=0,
            direct_io=False,
            io_errors=self.io_errors,
        )
