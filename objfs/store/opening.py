"""objfs.store.opening — `open_store`: assemble a Store from devices and run its tasks.

Opens the devices, checks their identity, chooses the erasure-coding policy,
recovers (objfs/store/recovery.py), builds the space map, the device health, the
data path, the WAL and the checkpointer around the recovered index, and runs the
WAL committer, the checkpointer and the scrubber in a nursery for as long as the
store is open. Leaving drains the WAL and writes a final checkpoint.

A node opens **degraded** with up to m of its devices missing or unreadable (m
of its policy): they are down, everything written meanwhile owes them
fragments, and the owed mask in the superblocks says so until a heal pass over
each has finished (docs/concurrency.md, "Devices down and heal").
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import trio

from objfs.config import StoreConfig
from objfs.errors import ConfigError, DeviceError, ObjfsError, UsageError
from objfs.store import erasure
from objfs.store.checkpoint import max_extents_per_pointer
from objfs.store.checkpointer import Checkpointer
from objfs.store.datapath import DataPath
from objfs.store.device import BlockDevice, open_available, write_parallel
from objfs.store.health import Health
from objfs.store.index import ObjectIndex
from objfs.store.records import Record
from objfs.store.recovery import (
    NoSuperblock,
    check_identity,
    read_superblock,
    rebuild_allocators,
    recover,
)
from objfs.store.scrub import Scrubber
from objfs.store.space import Space
from objfs.store.store import Clock, Store
from objfs.store.superblock import (
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    Superblock,
)
from objfs.store.types import Lsn, MiB
from objfs.store.wal import Wal

log = logging.getLogger(__name__)


async def _assemble(
    config: StoreConfig,
    devices: dict[int, BlockDevice],
    superblocks: dict[int, Superblock],
    clock: Clock,
    policy: erasure.Policy,
    missing: list[int],
) -> Store:
    recovered = await recover(devices, superblocks, writable=not config.read_only)
    index: ObjectIndex = recovered.index
    allocators = rebuild_allocators(superblocks, index, recovered.reserved)
    first = superblocks[min(superblocks)]
    smallest = min(first.data_sizes)
    base_reserve_bytes = max(4 * MiB, smallest // 64)
    metadata = [i for i in sorted(superblocks) if superblocks[i].holds_metadata]
    owed: set[int] = set()
    for superblock in superblocks.values():
        owed |= superblock.owed_indexes
    health = Health(first.node_device_indexes, down=set(missing), owed=owed)
    for device_index in missing:
        log.error("device %d is missing: the node runs degraded", device_index)

    async def persist_owed(mask: int) -> None:
        await write_owed_mask(devices, superblocks, health, mask)

    space = Space(
        allocators,
        # As after a checkpoint: room for a body twice the one just loaded.
        reserve_bytes=lambda: checkpointer.reserve_bytes(),
        reserve_devices=set(metadata),
        # What Checkpointer._write_body allows each copy (more once a mirror drops).
        reserve_extents=max_extents_per_pointer(len(metadata)) // max(len(metadata), 1),
    )
    datapath = DataPath(
        devices,
        space,
        policy=policy,
        fragment_size_bytes=config.fragment_size_bytes,
        health=health,
        persist_owed=persist_owed,
    )

    def apply(lsn: Lsn, record: Record) -> None:
        space.free_segments(index.apply(record))

    wal = Wal(
        {i: devices[i] for i in metadata},
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
        mirror_failed=health.mark_down,
    )
    live = {e for p in recovered.pointers.values() for e in p.extents()}
    checkpointer = Checkpointer(
        devices=devices,
        space=space,
        wal=wal,
        snapshot=index.snapshot,
        pointers=recovered.pointers,
        current=recovered.chosen,
        max_generation=recovered.max_generation,
        stale_extents=[e for e in recovered.reserved if e not in live],
        base_reserve_bytes=base_reserve_bytes,
    )
    scrubber = Scrubber(
        index,
        datapath,
        space,
        persist_owed=persist_owed,
        rate_bytes_per_s=config.scrub_rate_bytes_per_s,
    )
    return Store(
        config,
        scrubber=scrubber,
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
    policy: erasure.Policy,
    missing: list[int],
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
        store = await _assemble(config, devices, superblocks, clock, policy, missing)
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


def _policy(config: StoreConfig, superblock: Superblock, missing: list[int]) -> erasure.Policy:
    """The policy for new segments, checked against what this node can keep.

    Raises:
        ConfigError: the policy does not fit the devices, or needs more metadata
            copies than the node was formatted with.
        DeviceError: more devices are missing than the policy can do without.
    """
    policy = erasure.choose_policy(config.ec_policy, config.ec_backend, superblock.device_count)
    if policy.parity_fragments + 1 > superblock.metadata_copies:
        raise ConfigError(
            f"store.ec_policy: {policy.describe()} survives the loss of "
            f"{policy.parity_fragments} devices, but this node keeps its WAL and checkpoints "
            f"on {superblock.metadata_copies}; choose at most "
            f"{superblock.metadata_copies - 1} parity fragments or format with more copies"
        )
    if len(missing) > policy.parity_fragments:
        raise DeviceError(
            f"devices {missing} of node {superblock.node_id} are missing or unreadable "
            f"(found {superblock.device_count - len(missing)} of {superblock.device_count}); "
            f"a {policy.describe()} node can run without at most {policy.parity_fragments}. "
            "Bring them back, or adopt replacements with `objfs device replace`"
        )
    if policy.scheme != erasure.SCHEME_REPLICAS:
        erasure.tune_malloc()  # before the first big pyeclib buffers (../shared/FACTS.md)
    log.info("erasure coding %s over %d devices", policy.describe(), superblock.device_count)
    return policy


async def write_owed_mask(
    devices: dict[int, BlockDevice],
    superblocks: dict[int, Superblock],
    health: Health,
    mask: int,
) -> None:
    """Write `mask` into the superblocks of every up device: copy A everywhere and
    flush, then copy B and flush, so a crash leaves one whole copy on each.
    Shielded: a close (which cancels the scrubber) must not stop it between the
    two copies and leave them different."""
    targets = [i for i in sorted(devices) if i not in health.down]
    with trio.CancelScope(shield=True):
        for i in targets:
            superblocks[i] = replace(superblocks[i], owed_devices=mask)
        for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
            jobs = [(devices[i], [(offset, superblocks[i].encode())]) for i in targets]
            await write_parallel(jobs)
        health.persisted(mask)


@asynccontextmanager
async def open_store(
    config: StoreConfig,
    *,
    devices: Sequence[BlockDevice] | None = None,
    clock: Clock = time.time_ns,
    freeze_index: bool = False,
    background_jobs: bool = True,
    replicated: bool = False,
) -> AsyncIterator[Store]:
    """Open and recover a store, run its WAL committer and checkpointer, yield it.

    Entering blocks for the whole recovery; leaving drains the WAL and writes a
    final checkpoint (shielded from cancellation), then closes the devices.

    Args:
        devices: already-open devices (tests pass MemoryDevices); by default the
            config's device paths are opened.
        background_jobs: run the scrubber (heal owed devices, heal queue, periodic
            scrub); off for commands that run a pass themselves.
        replicated: a cluster node's store, whose index the cluster's log
            rebuilds: no local checkpoint is written (extents it took would
            clash with the fragments the log names).

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
            await open_available(paths, buffered=config.buffered_io, threads=config.device_threads)
        )
        devices = opened
    try:
        formatted = []
        for device in devices:
            try:
                formatted.append((device, await read_superblock(device)))
            except NoSuperblock as exc:
                if len(devices) == 1:
                    raise
                log.error("%s; left out (the node runs degraded without it)", exc)
        if not formatted:
            raise DeviceError("no device holds an objfs superblock; run `objfs format` first")
        missing = check_identity([d for d, _ in formatted], [sb for _, sb in formatted])
        by_index = {sb.device_index: device for device, sb in formatted}
        superblocks = {sb.device_index: sb for _, sb in formatted}
        policy = _policy(config, superblocks[min(superblocks)], missing)
        store = await _recover_without_gc(
            config, by_index, superblocks, clock, freeze_index, policy, missing
        )
        if not config.read_only and store.health.owed_unpersisted():
            await write_owed_mask(by_index, superblocks, store.health, store.health.owed_mask)
        wal_stopped = trio.Event()
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_wal, store.wal, wal_stopped)
            if not config.read_only and not replicated:
                nursery.start_soon(store.checkpointer.run, config.checkpoint_interval_ms)
                health = store.health
                if any(superblocks[i].holds_metadata for i in health.owed - health.down):
                    # A replaced metadata device holds no checkpoint body yet: one
                    # checkpoint in each slot gives it both.
                    for _ in range(2):
                        await store.checkpoint(force=True)
            if background_jobs and not config.read_only:
                nursery.start_soon(
                    functools.partial(
                        store.scrubber.run,
                        config.scrub_interval_ms,
                        background_scrub=config.scrub_rate_bytes_per_s > 0,
                    )
                )
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
