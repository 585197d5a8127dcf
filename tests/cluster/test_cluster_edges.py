"""Edge paths of the cluster code, each once a bug: real nodes on loopback
(tests/cluster/cluster_nodes.py), driven through S3 and the internal API.
"""

from __future__ import annotations

import json
import random

import crc32c
from cluster_nodes import Cluster, Member, signed

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
