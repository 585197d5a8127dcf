"""Placement's rules (shape, rendezvous, the per-node cap) and pending fragments
(claimed, reclaimed after their bound, taken back after a restart), on a real
space map and a real file, with a clock the test moves."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import trio

from objfs.cluster.pending import PendingFragments
from objfs.cluster.placement import (
    Placement,
    cluster_shape,
    pick,
    rendezvous,
    survives_node_loss,
)
from objfs.store import erasure
from objfs.store.extents import ExtentAllocator
from objfs.store.space import Space
from objfs.store.types import Extent, Fragment, Segment, device_node_number, global_device_index

MIB = 1 << 20


def test_the_shape_loses_at_most_m_fragments_with_any_node() -> None:
    assert cluster_shape({0: 3, 1: 3, 2: 3}) == (4, 2)
    assert cluster_shape({0: 3, 1: 3}) == (2, 2)
    assert cluster_shape({0: 1, 1: 1, 2: 1}) == (2, 1)
    assert cluster_shape({0: 1, 1: 1}) == (1, 1)
    assert cluster_shape({0: 6}) is None  # one node: its own default applies
    policy = erasure.Policy(4, 2, 0)
    assert survives_node_loss(policy, {0: 3, 1: 3, 2: 3})
    assert not survives_node_loss(policy, {0: 3, 1: 3})
    assert not survives_node_loss(policy, {0: 6})


def test_rendezvous_spreads_and_moves_little_when_a_device_is_added() -> None:
    devices = [global_device_index(n, i) for n in range(3) for i in range(3)]
    firsts = Counter(rendezvous(k.to_bytes(8, "big"), devices)[0] for k in range(9000))
    assert set(firsts) == set(devices)
    assert max(firsts.values()) < 2 * min(firsts.values())  # even, roughly
    added = [*devices, global_device_index(3, 0)]
    moved = sum(
        rendezvous(k.to_bytes(8, "big"), devices)[0] != rendezvous(k.to_bytes(8, "big"), added)[0]
        for k in range(9000)
    )
    assert 0 < moved < 9000 * 0.2  # ~1/10 move to the new device, no others


def test_pick_keeps_the_per_node_cap() -> None:
    devices = [global_device_index(n, i) for n in range(3) for i in range(3)]
    for key in range(200):
        chosen = pick(rendezvous(key.to_bytes(8, "big"), devices), 6, 2)
        assert len(set(chosen)) == 6
        assert max(Counter(device_node_number(d) for d in chosen).values()) == 2
    assert len(pick(devices[:3], 6, 2)) == 2  # not enough nodes: fewer, never over the cap


def space_of(device_indexes: list[int]) -> Space:
    allocators = {i: ExtentAllocator(i, 0, 64 * MIB) for i in device_indexes}
    return Space(allocators, reserve_bytes=0)


def test_pending_fragments_are_claimed_reclaimed_and_survive_a_restart(tmp_path: object) -> None:
    directory = str(tmp_path)
    now = [1_000_000.0]
    device = global_device_index(1, 0)

    async def main() -> None:
        space = space_of([device])
        pending = PendingFragments(directory, space, bound_s=600, clock=lambda: now[0])
        extents = [space.allocate_on(device, MIB) for _ in range(3)]
        await pending.add(extents)
        assert await trio.Path(pending.path).stat()
        claimed = Segment(MIB, (Fragment(extents[0], MIB, 0),))
        pending.claim([claimed])  # a record named it: in use for good
        assert len(pending) == 2

        # A restart before the bound: the space map is rebuilt from the index
        # (which names only the claimed one), and the other two are taken back.
        now[0] += 300
        rebuilt = space_of([device])
        rebuilt.allocators[device].reserve(extents[0])
        again = PendingFragments(directory, rebuilt, bound_s=600, clock=lambda: now[0])
        assert await again.restore() == 2
        for extent in extents:
            assert rebuilt.allocators[device].is_allocated(extent)
        fresh = rebuilt.allocate_on(device, MIB)  # never one of the pending ones
        assert all(fresh.offset_bytes != e.offset_bytes for e in extents)

        # Nothing claims them: at the bound they are freed, and only then.
        assert await again.reclaim() == 0
        now[0] += 301
        assert await again.reclaim() == 2
        assert again.reclaimed == 2 and len(again) == 0
        assert rebuilt.allocators[device].is_free(extents[1])
        assert rebuilt.allocators[device].is_free(extents[2])
        assert rebuilt.allocators[device].is_allocated(extents[0])

        # A torn last line (a crash mid-append) is skipped, not fatal.
        torn = (await trio.Path(again.path).read_bytes()) + b"513 4096 40"
        await trio.Path(again.path).write_bytes(torn)
        third = PendingFragments(directory, space_of([device]), bound_s=600, clock=lambda: now[0])
        assert await third.restore() == 0

    trio.run(main)


def test_a_pending_extent_no_longer_free_after_a_restart_is_left_alone(tmp_path: object) -> None:
    device = global_device_index(2, 1)

    async def main() -> None:
        space = space_of([device])
        pending = PendingFragments(str(tmp_path), space, bound_s=600, clock=lambda: 50.0)
        extent = space.allocate_on(device, 2 * MIB)
        await pending.add([extent])
        # Claimed, freed, and its blocks reused by a longer extent before the crash.
        rebuilt = space_of([device])
        rebuilt.allocators[device].reserve(Extent(device, extent.offset_bytes, 3 * MIB))
        again = PendingFragments(str(tmp_path), rebuilt, bound_s=600, clock=lambda: 60.0)
        assert await again.restore() == 0

    trio.run(main)


def test_a_discarded_stripe_is_freed_once_not_again_at_its_bound(tmp_path: object) -> None:
    """A record that fails to apply (or an aborted write) discards its segments:
    this node's pending fragments are freed then, and the reclaim at the bound
    must not free them a second time (by then the blocks may be someone else's)."""
    mine, theirs = global_device_index(1, 0), global_device_index(2, 0)
    now = [0.0]

    async def main() -> None:
        space = space_of([mine])
        pending = PendingFragments(str(tmp_path), space, bound_s=600, clock=lambda: now[0])
        placement = Placement(
            cast(Any, None),
            pending,
            1,
            shape="auto",
            backend="auto",
            devices=dict,
            live=lambda node: True,
            remote=lambda device: None,
        )
        extent = space.allocate_on(mine, MIB)
        await pending.add([extent])
        remote = Fragment(Extent(theirs, 0, MIB), MIB, 0)
        placement.discard([Segment(MIB, (Fragment(extent, MIB, 0), remote))])
        assert space.allocators[mine].is_free(extent) and len(pending) == 0
        reused = space.allocate_on(mine, MIB)  # the blocks go to another fragment
        assert reused == extent
        now[0] += 601
        assert await pending.reclaim() == 0
        assert space.allocators[mine].is_allocated(reused)

    trio.run(main)
