"""objfs.cluster.placement — the cluster's stripe shape, and the devices each stripe goes to.

**Shape.** With `store.ec_policy = "auto"` a stripe takes the widest of 4+2,
3+2, 2+2, 2+1, 1+1 whose k+m fragments fit on distinct devices of the nodes
that are up with at most m on any one node, so that losing a node loses at
most m fragments of any stripe (`cluster_shape`): three nodes of three devices
give 4+2, two such nodes 2+2. A stripe written while a node is down thus still
survives losing one more. When no shape fits (one node, or too few devices)
the node's own default for the device count is used and a node loss can cost
a stripe more than m fragments: `objfs cluster status` says so
(`survives_node_loss`). An explicit "K+M" is used as given where it fits.

**Placement.** Rendezvous hashing: each stripe gets a key (node number and a
counter), every device of a node that is up gets the score hash(key, device),
and fragments go to the highest scores, at most m per node (as evenly as
possible when the shape cannot keep that). A device added later takes over
only the stripes it now scores highest for, the property that makes moving
stripes cheap once there is rebalancing. A fragment refused by a device
(full, down) goes to the next device by score within the per-node limit. A
node that does not answer is marked unreachable (objfs.cluster.member), and the
stripe is given up and encoded again for the nodes still up (`place` returns
None). This node's fragments are stored directly, the others sent to their
nodes (objfs.cluster.remote); all are pending (objfs.cluster.pending) until
the record naming them is applied.

**Age.** A coordinator must not commit a record whose fragments other nodes may
already have reclaimed: `Placement.check_age` (called by the Replicator before
it proposes) refuses fragments written more than `BOUND_S - COMMIT_MARGIN_S`
ago.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, final

import crc32c
import trio

from objfs.cluster.pending import BOUND_S, COMMIT_MARGIN_S, PendingFragments
from objfs.errors import ConfigError, NoSpace, ObjfsError, Unavailable
from objfs.store import erasure
from objfs.store.datapath import DataPath
from objfs.store.device import AlignedBuffer, WriteData
from objfs.store.types import Extent, Segment, device_node_number

log = logging.getLogger(__name__)

SHAPES = ((4, 2), (3, 2), (2, 2), (2, 1), (1, 1))  # widest first


class RemoteStore(Protocol):
    async def store(self, payload: bytes, crc: int) -> Extent: ...


def cluster_shape(devices: dict[int, int]) -> tuple[int, int] | None:
    """The widest shape in `SHAPES` that puts at most m fragments on any node,
    each on its own device; None if none does. `devices`: node -> device count."""
    for k, m in SHAPES:
        if sum(min(m, count) for count in devices.values()) >= k + m:
            return k, m
    return None


def choose_cluster_policy(shape: str, backend: str, devices: dict[int, int]) -> erasure.Policy:
    """The policy new stripes use, from the config and the catalog's devices."""
    total = sum(devices.values())
    if shape != "auto":
        try:
            return erasure.choose_policy(shape, backend, total)
        except ConfigError as exc:
            log.warning("%s; the cluster uses its automatic shape instead", exc)
    k, m = cluster_shape(devices) or erasure.default_shape(total)
    return erasure.choose_policy(f"{k}+{m}", backend, total)


def survives_node_loss(policy: erasure.Policy, devices: dict[int, int]) -> bool:
    """Whether stripes placed with `policy` lose at most m fragments with any one node."""
    width, m = policy.width, policy.parity_fragments
    return len(devices) > 1 and sum(min(m, n) for n in devices.values()) >= width


def rendezvous(key: bytes, devices: Iterable[int]) -> list[int]:
    """`devices` by descending score hash(key, device)."""

    def score(device_index: int) -> bytes:
        return hashlib.blake2b(key + device_index.to_bytes(4, "big"), digest_size=8).digest()

    return sorted(devices, key=score, reverse=True)


def pick(order: Sequence[int], width: int, cap: int) -> list[int]:
    """The first `width` devices of `order` taking at most `cap` from any one node;
    fewer if there are not enough."""
    chosen: list[int] = []
    counts: dict[int, int] = {}
    for device_index in order:
        if len(chosen) == width:
            break
        node = device_node_number(device_index)
        if counts.get(node, 0) < cap:
            chosen.append(device_index)
            counts[node] = counts.get(node, 0) + 1
    return chosen


@final
class Placement:
    """The DataPath's placer on a cluster node.

    Args:
        datapath: this node's data path (its devices, its space).
        pending: this node's pending fragments.
        node_number: this node's.
        shape, backend: `store.ec_policy` and `store.ec_backend`.
        devices: the catalog's devices now: node -> global device indexes.
        live: whether a node is thought reachable now.
        remote: another node's device, to send a fragment to.
        abandon: told of each fragment written on another node that no record
            will name (its node is told to free it; else it does at its bound).
        clock: seconds, for the age of fragments (tests move it).
    """

    def __init__(
        self,
        datapath: DataPath,
        pending: PendingFragments,
        node_number: int,
        *,
        shape: str,
        backend: str,
        devices: Callable[[], dict[int, tuple[int, ...]]],
        live: Callable[[int], bool],
        remote: Callable[[int], RemoteStore | None],
        abandon: Callable[[Extent], None] = lambda extent: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.datapath = datapath
        self.pending = pending
        self.node_number = node_number
        self._shape, self._backend = shape, backend
        self._devices = devices
        self._live = live
        self._remote = remote
        self._abandon = abandon
        self._clock = clock
        self._keys = itertools.count(secrets.randbits(48))
        self._policies: dict[tuple[tuple[int, int], ...], erasure.Policy] = {}
        # When each fragment written for this node's stripes was stored, for
        # check_age. An entry goes when a record naming it is proposed
        # (check_age) or its stripe is given up (discard), however old: one
        # dropped earlier would let a write that took too long commit.
        self._written: dict[Extent, float] = {}
        self.fragments_sent = 0
        self.bytes_sent = 0
        self.replaced = 0  # fragments stored elsewhere than first chosen
        self.replanned = 0  # stripes encoded again because a node was found down

    def live_devices(self) -> dict[int, tuple[int, ...]]:
        """The catalog's devices on the nodes thought up (this node always)."""
        return {n: d for n, d in self._devices().items() if n == self.node_number or self._live(n)}

    def policy(self) -> erasure.Policy:
        """The shape for a stripe placed now: the cluster's, for the nodes that are
        up, so that a stripe written while a node is down still survives losing
        one more (docs/cluster.md)."""
        counts = tuple(sorted((n, len(d)) for n, d in self.live_devices().items()))
        policy = self._policies.get(counts)
        if policy is None:
            policy = choose_cluster_policy(self._shape, self._backend, dict(counts))
            self._policies[counts] = policy
        return policy

    async def place(
        self, policy: erasure.Policy, payloads: list[WriteData], sizes: list[int]
    ) -> list[Extent] | None:
        width = len(payloads)
        devices = self.live_devices()
        candidates = [
            d
            for n, node_devices in devices.items()
            for d in node_devices
            if n != self.node_number or self.datapath.usable(d)
        ]
        counts = {n: len(d) for n, d in devices.items()}
        if survives_node_loss(policy, counts):
            cap = policy.parity_fragments  # a node lost costs each stripe at most m
        else:
            cap = math.ceil(width / max(len(counts), 1))  # as even as it gets
        key = self.node_number.to_bytes(2, "big") + next(self._keys).to_bytes(8, "big")
        order = rendezvous(key, candidates)
        chosen = pick(order, width, cap)
        if len(chosen) < width:
            raise Unavailable(
                f"a {width}-fragment stripe needs {width} devices on reachable nodes; "
                f"{len(candidates)} are (nodes {sorted(counts)})"
            )
        spares = [d for d in order if d not in chosen]
        placed: list[Extent | None] = [None] * width
        errors: list[Exception] = []
        node_lost = False

        def next_spare() -> int | None:
            held: dict[int, int] = {}
            for device_index in chosen:
                node = device_node_number(device_index)
                held[node] = held.get(node, 0) + 1
            for device_index in spares:
                node = device_node_number(device_index)
                if self._live(node) and held.get(node, 0) < cap:
                    spares.remove(device_index)
                    return device_index
            return None

        async def one(number: int) -> None:
            nonlocal node_lost
            device_index: int | None = chosen[number]
            while device_index is not None and not node_lost:
                try:
                    payload, size = payloads[number], sizes[number]
                    placed[number] = await self._store(device_index, payload, size)
                    return
                except (ObjfsError, OSError) as exc:
                    errors.append(exc)
                    if not self._live(device_node_number(device_index)):
                        node_lost = True  # the shape itself must change: start again
                        return
                self.replaced += 1
                device_index = next_spare()
                if device_index is not None:
                    chosen[number] = device_index

        try:
            async with trio.open_nursery() as nursery:
                for number in range(width):
                    nursery.start_soon(one, number)
        except BaseException:
            self._undo(placed)
            raise
        if node_lost:
            self._undo(placed)
            self.replanned += 1
            return None
        if any(extent is None for extent in placed):
            self._undo(placed)
            if all(isinstance(e, NoSpace) for e in errors):
                raise NoSpace(f"no device could take a fragment: {errors[0]}")
            raise Unavailable(
                f"only {sum(e is not None for e in placed)} of {width} fragments of a stripe "
                f"could be stored: {'; '.join(str(e) for e in errors[-3:])}"
            )
        extents = [extent for extent in placed if extent is not None]
        now = self._clock()
        for extent in extents:
            self._written[extent] = now
        return extents

    async def _store(self, device_index: int, payload: WriteData, size_bytes: int) -> Extent:
        if device_node_number(device_index) == self.node_number:
            extent = await self.datapath.store_fragment(device_index, payload, size_bytes)
            try:
                await self.pending.add([extent])
            except BaseException:
                self.datapath.space.free_extent(extent)
                raise
            return extent
        device = self._remote(device_index)
        if device is None:
            raise Unavailable(f"node {device_node_number(device_index)} is not reachable")
        data = _as_bytes(payload, size_bytes)
        extent = await device.store(data, crc32c.crc32c(data))
        self.fragments_sent += 1
        self.bytes_sent += len(data)
        return extent

    def _undo(self, placed: Sequence[Extent | None]) -> None:
        """Free the fragments of a failed stripe: this node's now, other nodes'
        when they are told (`abandon`)."""
        for extent in placed:
            if extent is not None:
                self._give_up(extent)

    def discard(self, segments: Sequence[Segment]) -> None:
        """Placed segments no record will name (a failed commit, an aborted write):
        free this node's fragments now, if still pending (never twice: a reclaimed
        one is no longer pending), and have other nodes free theirs."""
        for segment in segments:
            for fragment in segment.fragments:
                self._written.pop(fragment.extent, None)
                self._give_up(fragment.extent)

    def _give_up(self, extent: Extent) -> None:
        if device_node_number(extent.device_index) == self.node_number:
            self.pending.forget(extent)
        else:
            self._abandon(extent)

    def check_age(self, segments: Iterable[Segment]) -> None:
        """Before a record naming `segments` is proposed: refuse it if any of their
        fragments this node placed is so old that its node may reclaim it first.

        Raises:
            Unavailable: a fragment is too old (the client's write took too long).
        """
        limit = BOUND_S - COMMIT_MARGIN_S
        now = self._clock()
        for segment in segments:
            for fragment in segment.fragments:
                written = self._written.pop(fragment.extent, None)
                if written is not None and now - written > limit:
                    raise Unavailable(
                        f"the write took over {limit:.0f} s from its first stripe to its "
                        "commit; its fragments may be reclaimed, so it is refused (retry it)"
                    )


def _as_bytes(payload: WriteData, size_bytes: int) -> bytes:
    if isinstance(payload, tuple):
        buffer, length = payload
        assert isinstance(buffer, AlignedBuffer)
        return bytes(buffer.view[:length])
    return bytes(memoryview(payload)[:size_bytes])
