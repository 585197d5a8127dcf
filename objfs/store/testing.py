"""objfs.store.testing — an in-memory device with fault injection, for unit tests of the core.

`MemoryDevice` keeps two images: what is durable and what was written but not yet
flushed. `crash()` makes a new device from the durable image plus whichever
unflushed writes a fault plan keeps (all, none, some, or a torn prefix of one),
the way TigerBeetle's testing/storage.zig and Swift's mem_diskfile.py model a
power cut. It is never used instead of real devices where a user meets them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import trio

from objfs.errors import DeviceError
from objfs.store.device import DeviceStatistics, WriteData, round_up
from objfs.store.types import BLOCK_SIZE_BYTES


@dataclass
class _PendingWrite:
    offset_bytes: int
    data: bytes


@dataclass
class FaultPlan:
    """What a crash keeps of the unflushed writes, in write order.

    keep_writes: how many of the pending writes land whole (None: all of them).
    torn_bytes: after those, how many bytes of the next pending write land (a torn write).
    """

    keep_writes: int | None = 0
    torn_bytes: int = 0


@final
class MemoryDevice:
    """A BlockDevice in memory. Reads see every write; only flushed writes survive `crash()`."""

    def __init__(self, size_bytes: int, *, path: str = "mem") -> None:
        self.path = path
        self.size_bytes = size_bytes
        self.durable = bytearray(size_bytes)
        self._current = bytearray(size_bytes)
        self._pending: list[_PendingWrite] = []
        self.fail_writes = False  # every write raises DeviceError while set
        self.fail_reads = False
        self.stats = {"reads": 0, "read_bytes": 0, "writes": 0, "written_bytes": 0, "flushes": 0}
        self.write_log: list[tuple[int, int]] = []

    def _check(self, offset_bytes: int, length_bytes: int) -> None:
        if offset_bytes < 0 or offset_bytes + length_bytes > self.size_bytes:
            raise DeviceError(f"{self.path}: I/O outside the device")

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.fail_reads:
            raise DeviceError(f"{self.path}: injected read failure")
        self._check(offset_bytes, length_bytes)
        self.stats["reads"] += 1
        self.stats["read_bytes"] += length_bytes
        return bytes(self._current[offset_bytes : offset_bytes + length_bytes])

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return [await self.read(offset, length) for offset, length in requests]

    def _write_now(self, offset_bytes: int, data: WriteData) -> None:
        if self.fail_writes:
            raise DeviceError(f"{self.path}: injected write failure")
        if offset_bytes % BLOCK_SIZE_BYTES:
            raise ValueError(f"{self.path}: unaligned write offset {offset_bytes}")
        if isinstance(data, tuple):
            buffer, length_bytes = data
            raw = bytes(buffer.view[:length_bytes])
        else:
            raw = bytes(data)
        raw += bytes(round_up(len(raw)) - len(raw))
        self._check(offset_bytes, len(raw))
        self._current[offset_bytes : offset_bytes + len(raw)] = raw
        self._pending.append(_PendingWrite(offset_bytes, raw))
        self.write_log.append((offset_bytes, len(raw)))
        self.stats["writes"] += 1
        self.stats["written_bytes"] += len(raw)

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await trio.lowlevel.checkpoint()
        self._write_now(offset_bytes, data)

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        await trio.lowlevel.checkpoint()
        for offset_bytes, data in writes:
            self._write_now(offset_bytes, data)
        if flush:
            self._flush_now()

    def _flush_now(self) -> None:
        for write in self._pending:
            end = write.offset_bytes + len(write.data)
            self.durable[write.offset_bytes : end] = write.data
        self._pending.clear()
        self.stats["flushes"] += 1

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
        self._flush_now()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    @property
    def pending_writes(self) -> int:
        return len(self._pending)

    def crash(self, plan: FaultPlan | None = None) -> MemoryDevice:
        """A new device holding what a power cut now would leave on this one."""
        plan = plan or FaultPlan()
        image = bytearray(self.durable)
        keep = len(self._pending) if plan.keep_writes is None else plan.keep_writes
        for write in self._pending[:keep]:
            image[write.offset_bytes : write.offset_bytes + len(write.data)] = write.data
        if plan.torn_bytes and keep < len(self._pending):
            torn = self._pending[keep]
            count = min(plan.torn_bytes, len(torn.data))
            image[torn.offset_bytes : torn.offset_bytes + count] = torn.data[:count]
        return MemoryDevice.from_image(image, path=self.path)

    def crash_randomly(self, rng: random.Random) -> MemoryDevice:
        """A crash that keeps a random prefix of the pending writes and tears the next."""
        keep = rng.randint(0, len(self._pending))
        torn = rng.randint(0, BLOCK_SIZE_BYTES * 2)
        return self.crash(FaultPlan(keep_writes=keep, torn_bytes=torn))

    def flip_bit(self, offset_bytes: int, bit: int = 0) -> None:
        """Rot one bit, durably (as media corruption would)."""
        self.durable[offset_bytes] ^= 1 << bit
        self._current[offset_bytes] ^= 1 << bit

    @classmethod
    def from_image(cls, image: bytearray, *, path: str = "mem") -> MemoryDevice:
        device = cls(len(image), path=path)
        device.durable = bytearray(image)
        device._current = bytearray(image)
        return device

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(
            path=self.path,
            size_bytes=self.size_bytes,
            reads=self.stats["reads"],
            read_bytes=self.stats["read_bytes"],
            writes=self.stats["writes"],
            written_bytes=self.stats["written_bytes"],
            flushes=self.stats["flushes"],
            direct_io=False,
        )
