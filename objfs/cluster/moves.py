"""objfs.cluster.moves — moving stripes between nodes: off a node that leaves, and back
into the full shape once every node is up (rebalancing).

A stripe moves by being stored again (`Store.move_segment`: read from any k
intact fragments, written as one new stripe placed as new stripes are now,
MOVE_SEGMENT committed through the log; docs/cluster.md). This module only
decides which stripes to move, and moves a few at a time:

- `segments_on(index, devices)`: every stripe with a fragment on those
  devices (what `objfs cluster remove` moves away);
- `Rebalancer`: a stripe written while a node was down has the shape for the
  nodes that were up (2+2 on two nodes); once every member answers again,
  the stripe is stored again in the cluster's full shape, so losing a node
  once more costs it at most m fragments. Each node rebalances only the
  stripes whose first fragment is on one of its own devices, so no two nodes
  move the same stripe, and none needs to ask the others.

Moves run on the event loop as tasks; a scan yields every few hundred
segments so the node keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import final

import trio

from objfs.errors import ObjfsError
from objfs.store import Store
from objfs.store.erasure import Policy
from objfs.store.index import ObjectIndex
from objfs.store.types import Segment, device_node_number

log = logging.getLogger(__name__)

MOVES_IN_FLIGHT = 4  # stripes moved at once off a node that leaves
_SCAN_YIELD = 500  # segments looked at between two checkpoints of the event loop


async def scan(index: ObjectIndex, wanted: Callable[[Segment], bool]) -> list[int]:
    """The ids of every referenced segment `wanted` says yes to, yielding to the
    event loop every few hundred."""
    found = []
    for done, segment_id in enumerate(index.segment_ids()):
        if done % _SCAN_YIELD == 0:
            await trio.lowlevel.checkpoint()
        segment = index.segment(segment_id)
        if segment is not None and wanted(segment):
            found.append(segment_id)
    return found


async def segments_on(index: ObjectIndex, devices: set[int]) -> list[int]:
    """The ids of every referenced segment with a fragment on one of `devices`."""
    return await scan(
        index, lambda segment: any(f.extent.device_index in devices for f in segment.fragments)
    )


async def move_segments(store: Store, segment_ids: list[int]) -> tuple[int, int]:
    """Move each segment, `MOVES_IN_FLIGHT` at once: (moved, failed). A segment
    deleted meanwhile counts as neither."""
    limiter = trio.CapacityLimiter(MOVES_IN_FLIGHT)
    counts = [0, 0]

    async def one(segment_id: int) -> None:
        async with limiter:
            try:
                counts[0] += await store.move_segment(segment_id)
            except (ObjfsError, OSError) as exc:
                counts[1] += 1
                log.error("segment %d could not be moved: %s", segment_id, exc)

    async with trio.open_nursery() as nursery:
        for segment_id in segment_ids:
            nursery.start_soon(one, segment_id)
    return counts[0], counts[1]


def well_placed(segment: Segment, policy: Policy) -> bool:
    """Whether a stripe has the full shape and at most m fragments on any node."""
    if (segment.data_fragments, len(segment.fragments)) != (policy.data_fragments, policy.width):
        return False
    per_node: dict[int, int] = {}
    for fragment in segment.fragments:
        node = device_node_number(fragment.extent.device_index)
        per_node[node] = per_node.get(node, 0) + 1
    return max(per_node.values()) <= policy.parity_fragments


@final
class Rebalancer:
    """Stores again, in the full shape, the stripes this node leads (first
    fragment on its devices) that were written while nodes were down.

    Args:
        store: this node's store.
        node_number: this node's.
        full_policy: the shape for every member (None: no shape keeps a node's
            loss to m fragments, so there is nothing to rebalance to).
        all_up: whether every member answers now (a stripe moved while one does
            not would get the narrow shape again).
        retired: devices of nodes leaving or gone (their stripes are `cluster
            remove`'s to move).
    """

    def __init__(
        self,
        store: Store,
        node_number: int,
        *,
        full_policy: Callable[[], Policy | None],
        all_up: Callable[[], bool],
        retired: Callable[[], set[int]],
    ) -> None:
        self._store = store
        self._node_number = node_number
        self._full_policy = full_policy
        self._all_up = all_up
        self._retired = retired
        self.passes = 0
        self.moved = 0
        self.failed = 0
        self.narrow = 0  # stripes this node leads that the last pass left narrow

    async def run(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            try:
                await self.rebalance()
            except ObjfsError as exc:  # the cluster cannot commit now: next time
                log.warning("rebalancing stopped: %s", exc)

    async def rebalance(self) -> int:
        """One pass: move every narrow stripe this node leads, one at a time,
        while every member answers; how many were moved."""
        policy = self._full_policy()
        if policy is None or not self._all_up():
            return 0
        retired = self._retired()

        def leads_narrow(segment: Segment) -> bool:
            first = segment.fragments[0].extent.device_index
            return (
                device_node_number(first) == self._node_number
                and first not in retired
                and not well_placed(segment, policy)
            )

        narrow = await scan(self._store.index, leads_narrow)
        moved = 0
        for segment_id in narrow:
            if not self._all_up() or self._full_policy() != policy:
                break  # a node went away meanwhile: the next pass goes on
            try:
                moved += await self._store.move_segment(segment_id)
            except (ObjfsError, OSError) as exc:
                self.failed += 1
                log.warning("stripe %d was not rebalanced: %s", segment_id, exc)
        self.passes += 1
        self.moved += moved
        self.narrow = len(narrow) - moved
        if moved:
            log.info("rebalanced %d stripes into %s", moved, policy.describe())
        return moved
