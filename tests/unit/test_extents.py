"""Tests of objfs.store.extents.ExtentAllocator.

Goal: the free-space map never hands out a block twice, never loses one, stays
fully coalesced, and refuses bad input loudly instead of corrupting itself.
Method: worked examples for each rule, then a hypothesis state machine that runs
random allocate/free/reserve sequences against a model (a set of free block
numbers) and checks the whole map against the model after every step.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from objfs.errors import NoSpace
from objfs.store.extents import AllocatorStatistics, ExtentAllocator, subtract_extents
from objfs.store.types import BLOCK_SIZE_BYTES, Extent

B = BLOCK_SIZE_BYTES


def blocks(offset_blocks: int, length_blocks: int, device_index: int = 0) -> Extent:
    return Extent(device_index, offset_blocks * B, length_blocks * B)


def free_list(allocator: ExtentAllocator) -> list[tuple[int, int]]:
    """Free extents as (offset_blocks, length_blocks), for readable asserts."""
    return [(e.offset_bytes // B, e.length_bytes // B) for e in allocator.free_extents()]


# -- worked examples -----------------------------------------------------------


def test_new_allocator_is_all_free() -> None:
    allocator = ExtentAllocator(3, 10 * B, 20 * B)
    assert allocator.device_index == 3
    assert free_list(allocator) == [(10, 10)]
    assert allocator.statistics() == AllocatorStatistics(
        device_index=3,
        total_bytes=10 * B,
        free_bytes=10 * B,
        free_extent_count=1,
        largest_free_bytes=10 * B,
    )


def test_unaligned_region_raises() -> None:
    with pytest.raises(ValueError):
        ExtentAllocator(0, 1, 10 * B)
    with pytest.raises(ValueError):
        ExtentAllocator(0, 0, 10 * B + 1)
    with pytest.raises(ValueError):
        ExtentAllocator(0, 10 * B, 0)


def test_allocate_rounds_up_and_takes_from_start() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    assert allocator.allocate(1) == blocks(0, 1)
    assert allocator.allocate(B + 1) == blocks(1, 2)
    assert free_list(allocator) == [(3, 7)]
    assert allocator.free_bytes == 7 * B


def test_allocate_non_positive_raises() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    with pytest.raises(ValueError):
        allocator.allocate(0)
    with pytest.raises(ValueError):
        allocator.allocate(-B)


def test_free_coalesces_left_right_and_both() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    a, b, c = allocator.allocate(B), allocator.allocate(2 * B), allocator.allocate(3 * B)
    assert free_list(allocator) == [(6, 4)]
    allocator.free(c)  # merges with the free tail on its right
    assert free_list(allocator) == [(3, 7)]
    allocator.free(a)  # no free neighbour: a new free extent
    assert free_list(allocator) == [(0, 1), (3, 7)]
    allocator.free(b)  # fills the hole: merges both sides
    assert free_list(allocator) == [(0, 10)]
    assert allocator.free_bytes == 10 * B


def test_free_coalesces_with_left_neighbour_only() -> None:
    allocator = ExtentAllocator(0, 0, 4 * B)
    a, b = allocator.allocate(B), allocator.allocate(3 * B)
    allocator.free(a)
    assert free_list(allocator) == [(0, 1)]
    allocator.free(Extent(0, b.offset_bytes, B))  # part of b, next to the free a
    assert free_list(allocator) == [(0, 2)]


def test_best_fit_picks_smallest_fitting_hole() -> None:
    allocator = ExtentAllocator(0, 0, 20 * B)
    allocator.reserve(blocks(0, 20))
    for hole in (blocks(0, 5), blocks(6, 2), blocks(9, 3), blocks(13, 2)):
        allocator.free(hole)
    assert allocator.allocate(2 * B) == blocks(6, 2)  # lowest offset among the 2-block holes
    assert allocator.allocate(2 * B) == blocks(13, 2)
    assert allocator.allocate(B) == blocks(9, 1)  # the 3-block hole beats the 5-block one
    assert allocator.allocate(4 * B) == blocks(0, 4)


def test_min_length_falls_back_to_largest_free_extent() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    allocator.reserve(blocks(3, 1))
    allocator.reserve(blocks(8, 1))
    assert free_list(allocator) == [(0, 3), (4, 4), (9, 1)]
    assert allocator.allocate(6 * B, min_length_bytes=4 * B) == blocks(4, 4)
    assert allocator.allocate(6 * B, min_length_bytes=2 * B + 1) == blocks(0, 3)
    with pytest.raises(NoSpace):
        allocator.allocate(6 * B, min_length_bytes=2 * B)


def test_no_space_message_names_device_and_sizes() -> None:
    allocator = ExtentAllocator(7, 0, 10 * B)
    allocator.reserve(blocks(5, 1, device_index=7))
    with pytest.raises(NoSpace) as caught:
        allocator.allocate(6 * B)
    message = str(caught.value)
    assert "device 7" in message
    assert str(6 * B) in message
    assert str(5 * B) in message  # the largest free extent
    assert free_list(allocator) == [(0, 5), (6, 4)]  # unchanged


def test_double_free_raises_and_changes_nothing() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    extent = allocator.allocate(4 * B)
    allocator.free(extent)
    with pytest.raises(ValueError, match="double free"):
        allocator.free(extent)
    other = allocator.allocate(2 * B)
    with pytest.raises(ValueError):
        allocator.free(Extent(0, other.offset_bytes, 3 * B))  # spills into free space
    assert free_list(allocator) == [(2, 8)]


def test_free_rejects_foreign_unaligned_and_outside_extents() -> None:
    allocator = ExtentAllocator(0, 2 * B, 10 * B)
    allocator.reserve(blocks(2, 8))
    bad = [
        blocks(2, 1, device_index=1),
        Extent(0, 2 * B + 1, B),
        Extent(0, 2 * B, B + 1),
        Extent(0, 2 * B, 0),
        blocks(0, 3),
        blocks(9, 2),
    ]
    for extent in bad:
        with pytest.raises(ValueError):
            allocator.free(extent)
    assert allocator.free_bytes == 0


def test_reserve_overlapping_or_twice_raises() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    allocator.reserve(blocks(2, 3))
    with pytest.raises(ValueError, match="not entirely free"):
        allocator.reserve(blocks(2, 3))
    with pytest.raises(ValueError):
        allocator.reserve(blocks(4, 2))
    with pytest.raises(ValueError):
        allocator.reserve(blocks(9, 2))
    with pytest.raises(ValueError):
        allocator.reserve(Extent(0, B, B // 2))
    assert free_list(allocator) == [(0, 2), (5, 5)]


def test_is_free_and_is_allocated() -> None:
    allocator = ExtentAllocator(0, 0, 10 * B)
    allocator.reserve(blocks(4, 2))
    assert allocator.is_free(blocks(0, 4))
    assert not allocator.is_allocated(blocks(0, 4))
    assert allocator.is_allocated(blocks(4, 2))
    assert not allocator.is_free(blocks(4, 2))
    assert not allocator.is_free(blocks(3, 2))  # straddles: neither
    assert not allocator.is_allocated(blocks(3, 2))
    assert not allocator.is_free(blocks(0, 10))  # spans two free extents and a used one


# -- randomized: a state machine against a model -------------------------------

REGION_START_BLOCKS = 8
REGION_BLOCKS = 48


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        start_bytes = REGION_START_BLOCKS * B
        self.allocator = ExtentAllocator(1, start_bytes, start_bytes + REGION_BLOCKS * B)
        self.model_free = set(range(REGION_START_BLOCKS, REGION_START_BLOCKS + REGION_BLOCKS))
        self.held: list[Extent] = []

    def model_runs(self) -> list[tuple[int, int]]:
        """The model's free space as maximal (offset_blocks, length_blocks) runs."""
        runs: list[tuple[int, int]] = []
        for block in sorted(self.model_free):
            if runs and runs[-1][0] + runs[-1][1] == block:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((block, 1))
        return runs

    @staticmethod
    def block_set(extent: Extent) -> set[int]:
        return set(range(extent.offset_bytes // B, extent.end_bytes // B))

    @rule(
        length_bytes=st.integers(1, 20 * B),
        min_blocks=st.none() | st.integers(1, 20),
    )
    def allocate(self, length_bytes: int, min_blocks: int | None) -> None:
        wanted_blocks = -(-length_bytes // B)
        runs = self.model_runs()
        fitting = sorted((n, o) for o, n in runs if n >= wanted_blocks)
        largest = max((n for _, n in runs), default=0)
        if fitting:
            expected: Extent | None = blocks(fitting[0][1], wanted_blocks, 1)
        elif min_blocks is not None and largest >= min_blocks:
            o, n = min((o, n) for o, n in runs if n == largest)
            expected = blocks(o, n, 1)
        else:
            expected = None
        min_length_bytes = None if min_blocks is None else min_blocks * B
        if expected is None:
            with pytest.raises(NoSpace):
                self.allocator.allocate(length_bytes, min_length_bytes=min_length_bytes)
            return
        got = self.allocator.allocate(length_bytes, min_length_bytes=min_length_bytes)
        assert got == expected
        self.model_free -= self.block_set(got)
        self.held.append(got)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free_held(self, data: st.DataObject) -> None:
        extent = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.allocator.free(extent)
        self.model_free |= self.block_set(extent)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free_part_of_held(self, data: st.DataObject) -> None:
        """Free a leading part of a held extent (as a trimmed write would)."""
        index = data.draw(st.integers(0, len(self.held) - 1))
        extent = self.held[index]
        part_blocks = data.draw(st.integers(1, extent.length_bytes // B))
        part = Extent(1, extent.offset_bytes, part_blocks * B)
        self.allocator.free(part)
        self.model_free |= self.block_set(part)
        rest = Extent(1, part.end_bytes, extent.length_bytes - part.length_bytes)
        if rest.length_bytes:
            self.held[index] = rest
        else:
            del self.held[index]

    @rule(
        offset_blocks=st.integers(REGION_START_BLOCKS, REGION_START_BLOCKS + REGION_BLOCKS - 1),
        length_blocks=st.integers(1, 8),
    )
    def reserve(self, offset_blocks: int, length_blocks: int) -> None:
        length_blocks = min(length_blocks, REGION_START_BLOCKS + REGION_BLOCKS - offset_blocks)
        extent = blocks(offset_blocks, length_blocks, 1)
        wanted = self.block_set(extent)
        if wanted <= self.model_free:
            self.allocator.reserve(extent)
            self.model_free -= wanted
            self.held.append(extent)
        else:
            with pytest.raises(ValueError):
                self.allocator.reserve(extent)

    @rule(
        offset_blocks=st.integers(REGION_START_BLOCKS, REGION_START_BLOCKS + REGION_BLOCKS - 1),
        length_blocks=st.integers(1, 8),
    )
    def query_and_bad_free(self, offset_blocks: int, length_blocks: int) -> None:
        length_blocks = min(length_blocks, REGION_START_BLOCKS + REGION_BLOCKS - offset_blocks)
        extent = blocks(offset_blocks, length_blocks, 1)
        wanted = self.block_set(extent)
        assert self.allocator.is_free(extent) == (wanted <= self.model_free)
        assert self.allocator.is_allocated(extent) == (not wanted & self.model_free)
        if wanted & self.model_free:  # touches free space: freeing it must be refused
            with pytest.raises(ValueError):
                self.allocator.free(extent)

    @invariant()
    def matches_model(self) -> None:
        extents = list(self.allocator.free_extents())
        for extent in extents:
            assert extent.device_index == 1
            assert extent.length_bytes > 0
        for left, right in itertools.pairwise(extents):
            # sorted, non-overlapping and non-adjacent (fully coalesced)
            assert left.end_bytes < right.offset_bytes
        assert sum(e.length_bytes for e in extents) == self.allocator.free_bytes
        assert [(e.offset_bytes // B, e.length_bytes // B) for e in extents] == self.model_runs()
        largest_bytes = max((e.length_bytes for e in extents), default=0)
        assert self.allocator.largest_free_bytes == largest_bytes
        statistics = self.allocator.statistics()
        assert statistics.free_extent_count == len(extents)
        assert statistics.free_bytes == len(self.model_free) * B

    @invariant()
    def held_extents_are_disjoint_and_cover_the_rest(self) -> None:
        used: set[int] = set()
        for extent in self.held:
            assert self.allocator.is_allocated(extent)
            extent_blocks = self.block_set(extent)
            assert not extent_blocks & used
            used |= extent_blocks
        assert not used & self.model_free
        region = set(range(REGION_START_BLOCKS, REGION_START_BLOCKS + REGION_BLOCKS))
        assert used | self.model_free == region


AllocatorMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None
)
TestAllocatorMachine = AllocatorMachine.TestCase


def test_with_used_builds_the_same_map_as_reserving_one_by_one() -> None:
    rng = random.Random(3)
    start, end = 1 << 20, 64 << 20
    used: list[Extent] = []
    position = start
    while position < end:
        position += rng.randrange(0, 8) * B
        length = rng.randrange(1, 16) * B
        if position + length > end:
            break
        used.append(Extent(0, position, length))
        position += length
    rng.shuffle(used)
    one_by_one = ExtentAllocator(0, start, end)
    for extent in used:
        one_by_one.reserve(extent)
    bulk = ExtentAllocator.with_used(0, start, end, used)
    assert list(bulk.free_extents()) == list(one_by_one.free_extents())
    assert bulk.free_bytes == one_by_one.free_bytes
    assert bulk.largest_free_bytes == one_by_one.largest_free_bytes
    assert bulk.allocate(B) == one_by_one.allocate(B)


def test_with_used_refuses_overlaps_and_strays() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        ExtentAllocator.with_used(0, 0, 1 << 20, [Extent(0, 0, 8192), Extent(0, 4096, 4096)])
    with pytest.raises(ValueError):
        ExtentAllocator.with_used(0, 0, 1 << 20, [Extent(0, 1 << 20, 4096)])
    with pytest.raises(ValueError):
        ExtentAllocator.with_used(0, 0, 1 << 20, [Extent(1, 0, 4096)])


def test_subtract_extents_leaves_what_nothing_covers() -> None:
    whole = [Extent(0, 0, 40960), Extent(1, 4096, 8192)]
    cuts = [Extent(0, 0, 4096), Extent(0, 8192, 4096), Extent(0, 36864, 8192), Extent(2, 0, 4096)]
    assert subtract_extents(whole, cuts) == [
        Extent(0, 4096, 4096),
        Extent(0, 12288, 24576),
        Extent(1, 4096, 8192),
    ]
    assert subtract_extents(whole, whole) == []
