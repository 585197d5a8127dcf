"""objfs.cluster.pending — fragments this node wrote that no applied record names yet.

In a cluster a stripe's fragments are written (here, or on other nodes through
the internal API) before the record naming them is committed. Until some
applied record names it, such an extent is *pending*: allocated, referenced by
nothing. Two things can go wrong, and this module answers both:

- The coordinator dies (or its commit fails) and no record ever names the
  extent. Pending extents are freed once `bound_s` has passed since they were
  written. The coordinator, for its part, never commits a record whose
  fragments are older than `bound_s - COMMIT_MARGIN_S` (objfs.cluster.placement).
- This node restarts before the record commits. Its space map is rebuilt from
  the index, where the extent is not (yet) named, so it would be handed out
  again while the record is still on its way. So every pending extent is
  written to `DATA_DIR/cluster-pending` and fdatasynced before the fragment
  counts as stored; at start the ones not yet expired, and still free in the
  rebuilt map, are taken again.

The file is text, one line per extent written, appended:

    <device index> <offset bytes> <length bytes> <expiry, unix seconds>\\n

A torn last line (a crash mid-append) does not parse and is skipped. Claims
and forgets are not written: after a restart an already-claimed extent is in
use in the rebuilt map and is skipped, one claimed or forgotten and since
freed is held until it expires (a short leak, never a double use), and a line
that overlaps a later one is skipped (its space was freed before the later
fragment was written there, so the later one is what is pending). The file is rewritten
(`write_file_atomically`) when it holds many more lines than pending extents.

The file's syscalls run in worker threads, one at a time (`_lock`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import final

import trio
from sortedcontainers import SortedDict

from objfs.store.device import read_small_file, write_file_atomically
from objfs.store.space import Space
from objfs.store.types import Extent, Segment

log = logging.getLogger(__name__)

BOUND_S = 3600.0  # a pending extent is freed this long after it was written
COMMIT_MARGIN_S = 300.0  # a coordinator commits only fragments younger than BOUND_S - this
RECLAIM_EVERY_S = 30.0
FILE_NAME = "cluster-pending"


@final
class PendingFragments:
    """Args:
    data_dir: where `cluster-pending` lives.
    space: the store's space map (expired extents are freed into it).
    bound_s: how long an unclaimed extent is kept.
    clock: unix seconds (expiries survive restarts, so wall time).
    """

    def __init__(
        self,
        data_dir: str,
        space: Space,
        *,
        bound_s: float = BOUND_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        self.space = space
        self.bound_s = bound_s
        self.clock = clock
        self.extents: dict[Extent, float] = {}  # pending extent -> its expiry
        self.reclaimed = 0  # extents freed because nothing claimed them in time
        self._lines = 0  # lines in the file
        self._lock = trio.Lock()

    # -- at start --------------------------------------------------------------------

    async def restore(self) -> int:
        """After the space map is rebuilt from the index: take back the extents the
        file lists that have not expired and are still free; rewrite the file with
        them. Returns how many were taken back."""
        async with self._lock:
            lines = await trio.to_thread.run_sync(_read_lines, self.path)
        now = self.clock()
        # Newest first: a line overlapping a later one was freed (forgotten, or
        # claimed and deleted) before the later one's space was allocated.
        later: dict[int, SortedDict[int, int]] = {}  # device -> spans listed later
        for line in reversed(lines):
            parsed = _parse(line)
            if parsed is None:
                continue
            extent, expiry = parsed
            written_over = _cover(later.setdefault(extent.device_index, SortedDict()), extent)
            if written_over or expiry <= now:
                continue
            allocator = self.space.allocators.get(extent.device_index)
            try:
                if allocator is None or not allocator.is_free(extent):
                    continue  # claimed before the restart (or not this node's)
                allocator.reserve(extent)
            except ValueError:
                continue  # outside the device: not a line this node wrote
            self.extents[extent] = expiry
        await self._rewrite()
        if self.extents:
            log.info("%d fragments written before the restart wait for their records", len(self))
        return len(self.extents)

    # -- while running ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.extents)

    async def add(self, extents: Iterable[Extent]) -> None:
        """Make `extents` (allocated and written, not yet named) pending, durably:
        when this returns they survive a crash of this node."""
        expiry = self.clock() + self.bound_s
        added = list(extents)
        for extent in added:
            self.extents[extent] = expiry
        text = "".join(_line(extent, expiry) for extent in added).encode()
        try:
            async with self._lock:
                await trio.to_thread.run_sync(_append, self.path, text)
                self._lines += len(added)
        except BaseException:
            for extent in added:  # not durable: the caller frees them
                self.extents.pop(extent, None)
            raise

    def claim(self, segments: Iterable[Segment]) -> None:
        """An applied record names these segments: their extents here are in use now."""
        if not self.extents:
            return
        for segment in segments:
            for fragment in segment.fragments:
                self.extents.pop(fragment.extent, None)

    def forget(self, extent: Extent) -> None:
        """A written fragment that will never be named (its stripe failed here): free it."""
        if self.extents.pop(extent, None) is not None:
            self.space.free_extent(extent)

    async def reclaim(self) -> int:
        """Free the pending extents whose time is up; returns how many."""
        now = self.clock()
        expired = [extent for extent, expiry in self.extents.items() if expiry <= now]
        for extent in expired:
            del self.extents[extent]
            self.space.free_extent(extent)
        if expired:
            self.reclaimed += len(expired)
            log.warning(
                "freed %d fragments no record named within %.0f s (a coordinator failed "
                "between writing them and committing)",
                len(expired),
                self.bound_s,
            )
        if self._lines > 2 * len(self.extents) + 1000:
            await self._rewrite()
        return len(expired)

    async def run(self) -> None:
        """Reclaim every `RECLAIM_EVERY_S`, for as long as the member runs."""
        while True:
            await trio.sleep(RECLAIM_EVERY_S)
            await self.reclaim()

    async def _rewrite(self) -> None:
        async with self._lock:
            snapshot = list(self.extents.items())
            text = "".join(_line(extent, expiry) for extent, expiry in snapshot).encode()
            await trio.to_thread.run_sync(write_file_atomically, self.path, text)
            self._lines = len(snapshot)


def _cover(spans: SortedDict[int, int], extent: Extent) -> bool:
    """Add `extent` to `spans` (disjoint, start -> end); whether it overlapped them."""
    start, end = extent.offset_bytes, extent.end_bytes
    overlapped = False
    at = spans.bisect_right(start)
    if at > 0 and spans.peekitem(at - 1)[1] >= start:  # touches the span before
        at -= 1
    while at < len(spans) and spans.peekitem(at)[0] <= end:  # touches this one
        other_start, other_end = spans.popitem(at)
        overlapped |= other_start < extent.end_bytes and extent.offset_bytes < other_end
        start, end = min(start, other_start), max(end, other_end)
    spans[start] = end
    return overlapped


def _line(extent: Extent, expiry: float) -> str:
    return f"{extent.device_index} {extent.offset_bytes} {extent.length_bytes} {int(expiry)}\n"


def _parse(line: bytes) -> tuple[Extent, float] | None:
    fields = line.split()
    if len(fields) != 4 or not line.endswith(b"\n"):
        return None
    try:
        device, offset, length, expiry = (int(f) for f in fields)
    except ValueError:
        return None
    if device < 0 or offset < 0 or length <= 0:
        return None
    return Extent(device, offset, length), float(expiry)


# -- the file's syscalls (worker threads) -----------------------------------------------


def _read_lines(path: str) -> list[bytes]:
    return (read_small_file(path) or b"").splitlines(keepends=True)


def _append(path: str, text: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        _write_all(fd, text)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, text: bytes) -> None:
    view = memoryview(text)
    while view:
        view = view[os.write(fd, view) :]
