"""objfs.store.fsck — one check per invariant of the store, offline or on an open store.

`run_fsck` checks a stopped store without writing a byte (unless `repair`):
superblocks, checkpoint pointers and body, every WAL mirror's chain, extents
(inside their device, never shared), piece lists, and optionally every stored
checksum. `check_open_store` checks a live store's space map against a rebuild
from its index: free space must be exactly the complement of what is referenced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import trio

from objfs.config import StoreConfig
from objfs.errors import Corrupted, DeviceError, ObjfsError, UsageError
from objfs.store import links, recovery
from objfs.store.datapath import DataPath
from objfs.store.device import BlockDevice, open_available
from objfs.store.health import Health
from objfs.store.index import ObjectIndex, version_segments
from objfs.store.space import Space
from objfs.store.superblock import (
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    NotASuperblock,
    Superblock,
    decode_superblock,
)
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    BucketName,
    Extent,
    ObjectKey,
    Segment,
    VersionId,
)


@dataclass
class Finding:
    check: str
    ok: bool
    message: str


@dataclass
class FsckReport:
    findings: list[Finding] = field(default_factory=list)
    objects: int = 0
    segments: int = 0
    verified_bytes: int = 0

    @property
    def clean(self) -> bool:
        return all(finding.ok for finding in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    def add(self, check: str, ok: bool, message: str) -> None:
        self.findings.append(Finding(check, ok, message))

    def render(self) -> str:
        lines = [f"{'ok ' if f.ok else 'BAD'} {f.check}: {f.message}" for f in self.findings]
        verdict = "clean" if self.clean else f"{len(self.problems)} problem(s)"
        lines.append(
            f"fsck: {verdict}; {self.objects} keys, {self.segments} segments, "
            f"{self.verified_bytes} bytes verified"
        )
        return "\n".join(lines)


async def check_superblocks(
    devices: list[BlockDevice], report: FsckReport
) -> tuple[list[BlockDevice], list[Superblock], list[int]]:
    """The devices with a superblock, their superblocks, and the node's missing indexes."""
    superblocks = []
    present = []
    for device in devices:
        copies: list[Superblock | None] = []
        for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
            try:
                block = await device.read(offset, BLOCK_SIZE_BYTES)
                copies.append(decode_superblock(block, path=device.path))
            except (NotASuperblock, OSError):
                copies.append(None)
        good = [copy for copy in copies if copy is not None]
        if not good:
            if len(devices) == 1:
                raise DeviceError(f"{device.path}: no valid superblock copy; not an objfs device")
            report.add("superblock", False, f"{device.path}: no valid superblock copy; left out")
            continue
        same = len(good) == 2 and good[0] == good[1]
        report.add(
            "superblock",
            same,
            f"{device.path}: device {good[0].device_index}, "
            + ("both copies valid and equal" if same else "one copy is damaged or differs"),
        )
        superblocks.append(good[0])
        present.append(device)
    if not superblocks:
        raise DeviceError("no device holds an objfs superblock")
    missing = recovery.check_identity(present, superblocks)
    report.add(
        "devices",
        not missing,
        f"devices {missing} are missing: the node is degraded"
        if missing
        else f"all {superblocks[0].device_count} devices present",
    )
    owed: set[int] = set()
    for superblock in superblocks:
        owed |= superblock.owed_indexes
    owed_list = sorted(owed)
    report.add(
        "owed",
        not owed_list,
        f"devices {owed_list} may lack fragments until healed (objfs scrub)"
        if owed_list
        else "no device owes fragments",
    )
    return present, superblocks, missing


def check_index(index: ObjectIndex, report: FsckReport) -> None:
    """Piece lists sorted, non-overlapping, inside the object, and sources long enough."""
    bad = 0
    version_count = logical_bytes = 0
    for (bucket, key), versions in index.iter_all():
        report.objects += 1
        version_count += len(versions)
        for version in versions:
            logical_bytes += version.size_bytes
            end = 0
            for piece in version.pieces:
                source_bytes = (
                    len(piece.source)
                    if isinstance(piece.source, bytes)
                    else piece.source.size_bytes
                )
                if (
                    piece.offset_bytes < end
                    or piece.length_bytes <= 0
                    or piece.end_bytes > version.size_bytes
                    or piece.source_offset_bytes + piece.length_bytes > source_bytes
                ):
                    bad += 1
                    report.add("pieces", False, f"{bucket}/{key} {version.version_id}: bad piece")
                end = piece.end_bytes
    if not bad:
        report.add("pieces", True, f"{report.objects} keys: piece lists well formed")
    check_link_groups(index, report)
    counted = (index.version_count, index.logical_bytes) == (version_count, logical_bytes)
    report.add(
        "counts",
        counted,
        f"{version_count} versions, {logical_bytes} bytes"
        + ("" if counted else f" (the index says {index.version_count}, {index.logical_bytes})"),
    )


def check_link_groups(index: ObjectIndex, report: FsckReport) -> None:
    """Every hard link group is whole (links.py): each member's current version
    names the same members, all exist, and all are the same version but for the id."""
    groups: dict[tuple[str, tuple[str, ...]], object] = {}
    bad = 0
    for (bucket, key), versions in index.iter_all():
        if not versions or versions[0].delete_marker:
            continue
        names = links.members(versions[0])
        if names is None:
            continue
        same = replace(versions[0], version_id=VersionId(""))
        group = (bucket, tuple(names))
        if key not in names or groups.setdefault(group, same) != same:
            bad += 1
            report.add("links", False, f"{bucket}/{key}: not the same file as its group {names}")
    for bucket, group_names in groups:
        for name in group_names:
            versions = index.versions(BucketName(bucket), ObjectKey(name))
            if not versions or links.members(versions[0]) != list(group_names):
                bad += 1
                report.add("links", False, f"{bucket}/{name}: missing from its group")
    if not bad:
        report.add("links", True, f"{len(groups)} hard link groups whole")


def check_space(
    space: Space, index: ObjectIndex, reserved: list[Extent], report: FsckReport
) -> None:
    """The space map equals all space minus the index's and the checkpoints' extents."""
    regions = {i: allocator.region() for i, allocator in space.allocators.items()}
    try:
        expected = recovery.rebuild_allocators_from_ranges(regions, index, reserved)
    except Corrupted as exc:
        report.add("extents", False, str(exc))
        return
    report.add("extents", True, "no extent used twice, all inside their devices")
    problems = []
    for device_index, allocator in space.allocators.items():
        actual = list(allocator.free_extents())
        wanted = list(expected[device_index].free_extents())
        if actual != wanted:
            leaked = expected[device_index].free_bytes - allocator.free_bytes
            problems.append(f"device {device_index}: free map differs ({leaked:+d} bytes leaked)")
    report.add(
        "space",
        not problems,
        "; ".join(problems) or "free space is exactly the complement of what is referenced",
    )


async def check_data(
    datapath: DataPath,
    index: ObjectIndex,
    report: FsckReport,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Read every fragment of every referenced segment and verify its checksum: a
    damaged fragment is a problem even when the segment can still be rebuilt (the
    store has lost redundancy until a scrub heals it)."""
    damaged = unreadable = 0
    segments: list[Segment] = list(index.referenced_segments())
    for done, segment in enumerate(segments):
        if progress is not None and done % 64 == 0:
            progress(done, len(segments))
        check = await datapath.check_segment(segment, repair=False)
        first = segment.fragments[0].extent
        where = f"segment at device {first.device_index} offset {first.offset_bytes}"
        if check.unrecoverable:
            unreadable += 1
            report.add(
                "data",
                False,
                f"{where}: fewer than {segment.data_fragments} intact "
                "fragments; its bytes are lost",
            )
        elif check.bad:
            damaged += 1
            report.add(
                "data",
                False,
                f"{where}: fragments {check.bad} damaged (rebuildable; objfs scrub heals them)",
            )
        else:
            report.verified_bytes += segment.size_bytes
    if progress is not None:
        progress(len(segments), len(segments))
    report.segments = len(segments)
    if not damaged and not unreadable:
        report.add(
            "data", True, f"{len(segments)} segments: every fragment read back with its checksum"
        )


def count_segments(index: ObjectIndex) -> int:
    return sum(1 for _ in index.referenced_segments())


async def check_offline(
    devices: list[BlockDevice],
    *,
    verify_data: bool,
    progress: Callable[[int, int], None] | None = None,
) -> FsckReport:
    """Every check, reading only; `progress(done, total)` follows the data check."""
    report = FsckReport()
    present, superblocks_list, missing = await check_superblocks(devices, report)
    by_index = {sb.device_index: d for sb, d in zip(superblocks_list, present, strict=True)}
    superblocks = {sb.device_index: sb for sb in superblocks_list}
    first = superblocks[min(superblocks)]
    metadata = [i for i in sorted(superblocks) if superblocks[i].holds_metadata]
    pointers = await recovery.read_pointers(by_index, metadata)
    try:
        chosen, index = await recovery.load_checkpoint(by_index, pointers)
    except Corrupted as exc:
        report.add("checkpoint", False, str(exc))
        return report
    newest = max(p.generation for p in pointers)
    report.add(
        "checkpoint",
        chosen.generation == newest,
        f"generation {chosen.generation} at LSN {chosen.lsn}"
        + ("" if chosen.generation == newest else f" (newest, {newest}, is damaged)"),
    )
    ends = await recovery.scan_mirrors(by_index, metadata, first, chosen)
    if not ends:
        report.add("wal", False, "no WAL mirror can be read")
        return report
    best = max(ends.values(), key=lambda r: r.next_lsn)
    same = all(r.next_lsn == best.next_lsn for r in ends.values())
    # Mirrors that end apart are what a crash in the middle of a batch leaves:
    # the longest chain holds every acknowledged record, and the next writable
    # open (or --repair) copies it onto the others. A mirror that cannot be
    # read at all is a problem.
    report.add(
        "wal",
        len(ends) == len(metadata),
        f"{len(best.records)} records after the checkpoint, up to LSN {best.next_lsn - 1}"
        + (
            ""
            if same
            else f"; mirrors end at {[r.next_lsn - 1 for r in ends.values()]} (a batch cut "
            "by a crash: the next writable open copies the longest onto the others)"
        )
        + ("" if len(ends) == len(metadata) else f"; only {len(ends)} mirrors readable"),
    )
    for item in best.records:
        try:
            index.apply(item.record)
        except ObjfsError:
            pass
    check_index(index, report)
    reserved = [extent for pointer in pointers for extent in pointer.extents()]
    try:
        allocators = recovery.rebuild_allocators(superblocks, index, _unique(reserved))
    except Corrupted as exc:
        report.add("extents", False, str(exc))
        return report
    report.add("extents", True, "no extent used twice, all inside their devices")
    report.segments = count_segments(index)
    if verify_data:
        health = Health(first.node_device_indexes, down=set(missing), owed=set())
        datapath = DataPath(by_index, Space(allocators, reserve_bytes=0), health=health)
        await check_data(datapath, index, report, progress)
    return report


def _unique(extents: list[Extent]) -> list[Extent]:
    return list({(e.device_index, e.offset_bytes, e.length_bytes): e for e in extents}.values())


async def run_fsck(
    config: StoreConfig,
    *,
    verify_data: bool,
    repair: bool,
    progress: Callable[[int, int], None] | None = None,
) -> FsckReport:
    """`objfs fsck`: check a stopped store; with `repair`, let recovery mend what it can
    (damaged superblock copies, lagging WAL mirrors, a damaged newest checkpoint),
    then check again. Repair only rewrites metadata from a verified good copy."""
    paths = config.device_paths()
    if not paths:
        raise UsageError(f"no devices found in {config.data_dir} and none configured")
    devices: list[BlockDevice] = list(await open_available(paths, buffered=config.buffered_io))
    try:
        report = await check_offline(devices, verify_data=verify_data, progress=progress)
        if repair and not report.clean:
            await _repair(devices, config)
            report = await check_offline(devices, verify_data=verify_data, progress=progress)
    finally:
        for device in devices:
            await device.aclose()
    return report


async def _repair(devices: list[BlockDevice], config: StoreConfig | None = None) -> None:
    from objfs.store.opening import open_store  # fsck is below the store; repair uses it

    for device in devices:
        try:
            superblock = await recovery.read_superblock(device)
        except DeviceError:
            continue  # not a device of this node any more: left out
        block = superblock.encode()
        await device.write_many(
            [(SUPERBLOCK_A_OFFSET_BYTES, block), (SUPERBLOCK_B_OFFSET_BYTES, block)], flush=True
        )
    config = config or StoreConfig()
    async with open_store(config, devices=devices, background_jobs=False) as store:
        await store.checkpoint()
    await trio.lowlevel.checkpoint()


async def check_open_store(store: object, *, verify_data: bool = False) -> FsckReport:
    """Check an open store's live state: index, extents, space map, and optionally data."""
    from objfs.store.store import Store

    assert isinstance(store, Store)
    report = FsckReport()
    check_index(store.index, report)
    reserved = _unique([e for p in store.pointers.values() for e in p.extents()])
    reserved += store.pending_extents()
    check_space(store.space, store.index, reserved, report)
    report.segments = count_segments(store.index)
    if verify_data:
        await check_data(store.datapath, store.index, report)
    return report


__all__ = ["FsckReport", "check_offline", "check_open_store", "run_fsck", "version_segments"]
