"""Edge paths of the cluster code, each once a bug: real nodes on loopback
(tests/cluster/cluster_nodes.py), driven through S3 and the internal API.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any, cast

import crc32c
import pytest
from cluster_nodes import SECRET, Cluster, Member, signed

from objfs.cluster.pending import BOUND_S
from objfs.cluster.placement import Placement
from objfs.errors import Unavailable
from objfs.store.types import Extent, Fragment, Segment, global_device_index

MiB = 1 << 20


def store_fragment(member: Member, device: int, size: int) -> tuple[int, int, int]:
    """A fragment written through the node's internal API (pending there): its extent."""
    data = random.randbytes(size)
    target = f"/cluster/v1/write?device={device}&size={size}&crc={crc32c.crc32c(data)}"
    status, body = signed(member.api_address, "POST", target, data)
    assert status == 200, body
    answer = json.loads(body)
    return device, answer["offset"], answer["length"]


def forget(member: Member, *extents: tuple[int, int, int]) -> int:
    """How many of `extents` the node freed when told to forget them."""
    body = json.dumps({"extents": [list(e) for e in extents]}).encode()
    status, answer = signed(member.api_address, "POST", "/cluster/v1/forget", body)
    assert status == 200, answer
    freed: int = json.loads(answer)["freed"]
    return freed


def overlap(first: tuple[int, int, int], second: tuple[int, int, int]) -> bool:
    return (
        first[0] == second[0]
        and first[1] < second[1] + second[2]
        and second[1] < first[1] + first[2]
    )


def test_a_restart_takes_back_the_pending_fragment_written_last_where_lines_overlap(
    cluster: Cluster,
) -> None:
    """The pending file is appended to and never told of forgets or claims, so
    after a forget the same space can be listed again, by a later, longer
    fragment. At a restart the older line was taken back and the newer one
    skipped as "not free": the tail of the newer fragment was handed out again
    (two fragments in one place) and, at the older line's expiry, the space
    of a fragment a record may name by then was freed."""
    (node,) = cluster.start(1)
    first = store_fragment(node, 0, 1 * MiB)
    assert forget(node, first) == 1
    second = store_fragment(node, 0, 2 * MiB)
    assert overlap(first, second), (first, second)  # the space freed is used again

    node.kill()
    node.serve()
    node.ready()
    assert node.status()["placement"]["pending_fragments"] == 1
    third = store_fragment(node, 0, 1 * MiB)
    assert not overlap(third, second), (second, third)
    assert forget(node, first) == 0
    assert forget(node, second, third) == 2
    assert node.status()["placement"]["pending_fragments"] == 0


async def test_a_write_whose_first_stripe_outlived_the_bound_is_refused_at_its_commit() -> None:
    """Other nodes free a pending fragment `BOUND_S` after it was written, so the
    coordinator refuses to commit a record naming one written that long ago.
    It forgot how old a fragment was once `BOUND_S` had passed and it placed
    another stripe: a write streaming for over an hour (a slow PUT, a file
    written through the mount) then committed fragments other nodes had freed
    and could hand out again. (No real node here: the bound is an hour.)"""
    now = [0.0]
    offsets = itertools.count(0, MiB)

    class OtherNode:
        def __init__(self, device_index: int) -> None:
            self.device_index = device_index

        async def store(self, payload: bytes, crc: int) -> Extent:
            return Extent(self.device_index, next(offsets), MiB)

    devices = {n: tuple(global_device_index(n, i) for i in range(3)) for n in (1, 2)}
    placement = Placement(
        cast(Any, None),  # node 0 places nothing on its own devices here
        cast(Any, None),
        0,
        shape="2+2",
        backend="auto",
        devices=lambda: {0: (), **devices},
        live=lambda node: True,
        remote=OtherNode,
        clock=lambda: now[0],
    )

    async def stripe() -> Segment:
        policy = placement.policy()
        width = policy.width
        extents = await placement.place(policy, [b"data"] * width, [4] * width)
        assert extents is not None
        return Segment(8, tuple(Fragment(e, 4, 0) for e in extents), policy.data_fragments)

    first = await stripe()
    now[0] += BOUND_S + 1  # the other nodes free the first stripe's fragments now
    second = await stripe()
    with pytest.raises(Unavailable, match="took over"):
        placement.check_age([first, second])


def test_a_node_that_joined_and_never_ran_can_be_removed(cluster: Cluster) -> None:
    """`objfs cluster join` gives a node a number in the catalog; it becomes a
    voting member when it first runs. One that never runs (its machine died)
    could not be removed: the remove first marked it leaving, which the catalog
    refuses for a node not admitted, so it stayed "joining" for good, its name
    and Raft address taken."""
    (first,) = cluster.start(1)
    joined = cluster.add()
    done = joined.cli(
        "cluster", "join", first.api_address, "--name", "node1",
        "--raft-address", joined.raft_address, "--api-address", joined.api_address,
        "--device-count", "3", "--device-size", "64M",
        environ={"OBJFS_CLUSTER_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [n["number"] for n in first.status()["catalog"]["nodes"]] == [0, 1]

    done = first.cli("cluster", "remove", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node 1 is removed from the cluster" in done.stdout, done.stdout
    assert [n["number"] for n in first.status()["catalog"]["nodes"]] == [0]
    first.s3().create_bucket(Bucket="still-committing")


def test_malformed_internal_requests_get_400_and_change_nothing(cluster: Cluster) -> None:
    """Signed but malformed requests to the internal API: numbers JSON allows
    that are no integers (1e400, Infinity), nesting deeper than the parser's
    recursion limit, and a join whose addresses are not HOST:PORT. They were
    500s with a traceback in the log, and the join went into the catalog for
    good (every node's), to fail only when the node asked to be admitted."""
    (node,) = cluster.start(1)
    catalog = node.status()["catalog"]
    malformed = [
        ("/cluster/v1/read", b'{"device": 0, "ranges": [[Infinity, 1]]}'),
        ("/cluster/v1/read", b'{"device": 1e400, "ranges": [[0, 4096]]}'),
        ("/cluster/v1/read", b"[" * 100_000),
        ("/cluster/v1/heal", b'{"segments": [1e400]}'),
        ("/cluster/v1/forget", b'{"extents": [[0, 0, -Infinity]]}'),
        ("/cluster/v1/admit", b'{"number": 1e400}'),
        ("/cluster/v1/join", b'{"name": "x", "raft_address": "nowhere", "api_address": "a:1"}'),
        ("/cluster/v1/join", b'{"name": "x", "raft_address": "a:1", "api_address": "a:99999"}'),
        ("/cluster/v1/join", b'{"name": ["x"], "raft_address": "a:1", "api_address": "a:2"}'),
    ]
    for target, body in malformed:
        status, answer = signed(node.api_address, "POST", target, body)
        assert status == 400, (target, body[:60], status, answer)
    assert node.status()["catalog"] == catalog
    assert node.node is not None and "Traceback" not in node.node.log()
