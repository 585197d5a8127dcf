"""A node whose apply of a committed entry failed (a bug: not an ObjfsError).

Method: a one-node cluster made by `objfs cluster init`, its node run in this
process (`s3_node.run_in_thread`: `objfs.node.run_node` in a thread of its
own), so that the index's apply can be made to raise for one record; the
store is called directly on the node's event loop, the internal API over
loopback with signed requests.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import crc32c
import pytest
import trio
from cluster_nodes import SECRET, Cluster, Member, signed
from s3_node import Node, run_in_thread, stop_node

from objfs.config import load_config
from objfs.errors import OutcomeUnknown
from objfs.store import Store
from objfs.store.records import PutVersion, Record, new_segments
from objfs.store.types import device_node_number

MiB = 1 << 20


@dataclass
class LocalNode:
    """A cluster node run by this process: its member's addresses, the node."""

    member: Member
    node: Node

    @property
    def store(self) -> Store:
        return self.node.store

    def run(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`await function(*args)` on the node's event loop."""
        return trio.from_thread.run(function, *args, trio_token=self.node.token)

    def status(self) -> dict[str, Any]:
        code, body = signed(self.member.api_address, "GET", "/cluster/v1/status")
        assert code == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer


@pytest.fixture
def local_node(cluster: Cluster) -> Iterator[LocalNode]:
    member = cluster.add()
    done = member.cli(
        "cluster", "init", "--name", "node0",
        "--raft-address", member.raft_address, "--api-address", member.api_address,
        "--device-count", "3", "--device-size", "64M",
        environ={"OBJFS_CLUSTER_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = load_config(member.config, data_dir=member.data, environ=os.environ)
    node = run_in_thread(config, timeout=90)
    try:
        yield LocalNode(member, node)
    finally:
        stop_node(node)


def fail_once(node: LocalNode, key: str) -> list[Record]:
    """Make the node's index raise (a bug) when it applies the PUT of `key`, once;
    the record it was given is appended to the list returned."""
    index = node.store.index
    apply = index.apply
    failed: list[Record] = []

    def broken(record: Record) -> Any:
        if isinstance(record, PutVersion) and record.key == key and not failed:
            failed.append(record)
            raise RuntimeError("injected: the index's apply failed")
        return apply(record)

    index.apply = broken  # type: ignore[method-assign]
    return failed


def test_a_committed_record_that_failed_to_apply_keeps_its_fragments(
    local_node: LocalNode,
) -> None:
    """The writer of a record whose apply raised heard Unavailable although the
    record was committed (and applied on the other nodes): the store took the
    write for refused and freed the record's fragments here, which the other
    nodes' index names; the space was handed out again, two fragments in one
    place. The writer hears OutcomeUnknown, and the fragments are kept."""
    node = local_node
    node.run(node.store.create_bucket, "bucket")
    failed = fail_once(node, "boom")
    assert node.status()["placement"]["pending_fragments"] == 0

    with pytest.raises(OutcomeUnknown, match="injected"):
        node.run(node.store.put_object, "bucket", "boom", random.randbytes(2 * MiB))

    assert node.status()["failure"] is not None
    (record,) = failed
    extents = [f.extent for s in new_segments(record) for f in s.fragments]
    assert extents and all(device_node_number(e.device_index) == 0 for e in extents)
    # Still pending (named by nothing this node applied), not freed.
    assert node.status()["placement"]["pending_fragments"] == len(extents)


def test_a_node_that_stopped_applying_refuses_fragment_writes(local_node: LocalNode) -> None:
    """A node whose apply failed applies no record after it, so its space map no
    longer says what is free (a fragment a later record names may be freed here
    once its pending time is up), yet it still took other nodes' fragments. It
    refuses them now with 503, which the writing node takes as "place them
    elsewhere"."""
    node = local_node
    node.run(node.store.create_bucket, "bucket")
    fail_once(node, "boom")
    with pytest.raises(OutcomeUnknown):
        node.run(node.store.put_object, "bucket", "boom", random.randbytes(2 * MiB))
    pending = node.status()["placement"]["pending_fragments"]

    data = random.randbytes(MiB)
    target = f"/cluster/v1/write?device=0&size={MiB}&crc={crc32c.crc32c(data)}"
    status, answer = signed(node.member.api_address, "POST", target, data)
    assert status == 503, answer
    assert b"stopped applying" in answer
    assert node.status()["placement"]["pending_fragments"] == pending
