"""objfs.store.opening — `open_store`: assemble a Store from devices and run its tasks.

Opens the devices, checks their identity, recovers (objfs/store/recovery.py),
builds the space map, the data path, the WAL and the checkpointer around the
recovered index, and runs the WAL committer and the checkpointer in a nursery for
as long as the store is open. Leaving drains the WAL and writes a final checkpoint.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from objfs.config import StoreConfig
from objfs.errors import ObjfsError, UsageError
from objfs.store.checkpointer import Checkpointer
from objfs.store.datapath import DataPath
from objfs.store.device import BlockDevice, open_devices
from objfs.store.index import ObjectIndex
from objfs.store.records import Record
from objfs.store.recovery import check_identity, read_superblock, rebuild_allocators, recover
from objfs.store.space import Space
from objfs.store.store import Clock, Store
from objfs.store.superblock import Superblock
from objfs.store.types import Lsn, MiB
from objfs.store.wal import Wal

log = logging.getLogger(__name__)


async def _assemble(
    config: StoreConfig,
    devices: dict[int, BlockDevice],
    superblocks: dict[int, Superblock],
    clock: Clock,
) -> Store:
    recovered = await recover(devices, superblocks, writable=not config.read_only)
    index: ObjectIndex = recovered.index
    allocators = rebuild_allocators(superblocks, index, recovered.reserved)
    smallest = min(sb.data_size_bytes for sb in superblocks.values())
    base_reserve_bytes = max(4 * MiB, smallest // 64)
    metadata = [i for i in sorted(superblocks) if superblocks[i].holds_metadata]
    space = Space(
        allocators,
        # As after a checkpoint: room for a body twice the one just loaded.
        reserve_bytes=lambda: checkpointer.reserve_bytes(),
        reserve_devices=set(metadata),
        is_referenced=lambda segment_id: index.references(segment_id) > 0,
    )
    datapath = DataPath(devices, space)

    def apply(lsn: Lsn, record: Record) -> None:
        space.free_segments(index.apply(record))

    first = superblocks[0]
    wal = Wal(
        [devices[i] for i in metadata],
        wal_offset_bytes=first.wal_offset_bytes,
        wal_size_bytes=first.wal_size_bytes,
        next_lsn=recovered.next_lsn,
        tail_position=recovered.tail_position,
        head_position=recovered.head_position,
        tail_block=recovered.tail_block,
        salt=first.format_stamp,
        apply=apply,
        before_write=datapath.flush_dirty,
        request_checkpoint=lambda: checkpointer.request(),
    )
    live = {e for p in recovered.pointers.values() for e in p.extents()}
    checkpointer = Checkpointer(
        devices=devices,
        metadata=metadata,
        space=space,
        wal=wal,
        snapshot=index.snapshot,
        pointers=recovered.pointers,
        current=recovered.chosen,
        max_generation=recovered.max_generation,
        stale_extents=[e for e in recovered.reserved if e not in live],
        base_reserve_bytes=base_reserve_bytes,
    )
    return Store(
        config,
        devices=devices,
        superblocks=superblocks,
        index=index,
        space=space,
        datapath=datapath,
        wal=wal,
        checkpointer=checkpointer,
        clock=clock,
        replayed_records=recovered.replayed,
    )


async def _recover_without_gc(
    config: StoreConfig,
    devices: dict[int, BlockDevice],
    superblocks: dict[int, Superblock],
    clock: Clock,
    freeze_index: bool,
) -> Store:
    """`_assemble` with the cyclic GC paused: building millions of index objects
    otherwise sets off collections that walk all of them again and again (a third
    of recovery time). With `freeze_index` (a process that keeps this one store
    open, as `objfs serve`), the index then goes into the GC's permanent
    generation before collections resume, so no later pass walks it. A process
    that opens stores again and again must not freeze: each closed store's
    reference cycles would be kept for good."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        store = await _assemble(config, devices, superblocks, clock)
        if freeze_index:
            gc.freeze()
        return store
    finally:
        if enabled:
            gc.enable()


async def _run_wal(
    wal: Wal, stopped: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    try:
        await wal.run(task_status=task_status)
    except BaseException:
        # A broken invariant (or cancellation) mid-batch: the index may be half
        # changed, so no checkpoint may be written from it. Recovery redoes it.
        wal.fail("the WAL committer stopped unexpectedly")
        raise
    finally:
        stopped.set()


async def _close(store: Store, wal_stopped: trio.Event) -> None:
    """Drain the WAL, then write a final checkpoint (so the next open replays nothing)."""
    store.wal.close()
    await wal_stopped.wait()
    if store.wal.failure is None and not store.config.read_only:
        try:
            await store.checkpoint()
        except ObjfsError as exc:
            log.error("final checkpoint failed: %s (the WAL still holds everything)", exc)


@asynccontextmanager
async def open_store(
    config: StoreConfig,
    *,
    devices: Sequence[BlockDevice] | None = None,
    clock: Clock = time.time_ns,
    freeze_index: bool = False,
) -> AsyncIterator[Store]:
    """Open and recover a store, run its WAL committer and checkpointer, yield it.

    Entering blocks for the whole recovery; leaving drains the WAL and writes a
    final checkpoint (shielded from cancellation), then closes the devices.

    Args:
        devices: already-open devices (tests pass MemoryDevices); by default the
            config's device paths are opened.

    Raises:
        UsageError: no devices configured or found.
        DeviceError: a device is missing, foreign, of a newer format, or in use.
        Corrupted: no readable checkpoint.
    """
    opened: list[BlockDevice] = []
    if devices is None:
        paths = config.device_paths()
        if not paths:
            raise UsageError(
                f"no devices in {os.path.join(config.data_dir, 'devices')} and none configured; "
                "run `objfs format` first"
            )
        opened.extend(
            await open_devices(paths, buffered=config.buffered_io, threads=config.device_threads)
        )
        devices = opened
    try:
        superblocks_list = [await read_superblock(device) for device in devices]
        check_identity(devices, superblocks_list)
        by_index = {
            sb.device_index: device for sb, device in zip(superblocks_list, devices, strict=True)
        }
        superblocks = {sb.device_index: sb for sb in superblocks_list}
        store = await _recover_without_gc(config, by_index, superblocks, clock, freeze_index)
        wal_stopped = trio.Event()
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_wal, store.wal, wal_stopped)
            if not config.read_only:
                nursery.start_soon(store.checkpointer.run, config.checkpoint_interval_ms)
            try:
                yield store
            except BaseException as exc:
                body_error = exc  # re-raised below, outside the nursery: not as a group
            with trio.CancelScope(shield=True):
                await _close(store, wal_stopped)
            nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
    finally:
        for device in opened:
            await device.aclose()
