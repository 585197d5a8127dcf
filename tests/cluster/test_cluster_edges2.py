"""More edge paths of the cluster code, each once a bug: real nodes on loopback
(tests/cluster/cluster_nodes.py), driven through the internal API.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest
from cluster_nodes import SECRET, Cluster, Member

from objfs.cluster import peers


def send(
    address: str, method: str, target: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    """One request to a node's internal API, with exactly these headers."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def signed_headers(method: str, target: str, body: bytes) -> dict[str, str]:
    """The headers a node signs a request with."""
    when = int(time.time())
    return {
        peers.TIME_HEADER: str(when),
        peers.SIGNATURE_HEADER: peers.signature(SECRET, method, target, body, when),
    }


def join(cluster: Cluster, first: Member) -> Member:
    """`objfs cluster join` through `first` for a new node, not started."""
    joined = cluster.add()
    done = joined.cli(
        "cluster", "join", first.api_address, "--name", f"node{joined.number}",
        "--raft-address", joined.raft_address, "--api-address", joined.api_address,
        "--device-count", "3", "--device-size", "64M",
        environ={"OBJFS_CLUSTER_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return joined


def test_an_admission_cut_short_after_its_raft_change_is_finished_by_the_retry(
    cluster: Cluster,
) -> None:
    """Admitting a node is two steps: pysyncobj's membership change, then
    `admitted_v1` in the catalog. A coordinator that died between them left the
    node in Raft but not admitted, and every later admission tried to add it to
    Raft again, which pysyncobj refuses for a member: the node asked for ever
    and never started."""
    (first,) = cluster.start(1)
    joined = join(cluster, first)
    # Node 0 starts the admission and gets as far as the Raft change (in its
    # log; it cannot commit while node 1 does not run) ...
    target, body = "/cluster/v1/admit", json.dumps({"number": joined.number}).encode()
    with pytest.raises(TimeoutError):
        send(first.api_address, "POST", target, body, signed_headers("POST", target, body), 2)
    assert joined.raft_address in first.status()["raft"]["peers_connected"]
    # ... and dies before `admitted_v1`. Started again, it commits the change.
    first.kill()
    first.serve()

    joined.serve()
    joined.ready(timeout=45)
    first.ready()
    cluster.wait_for_members(2)
    joined.s3().create_bucket(Bucket="admitted")
    assert [b["Name"] for b in first.s3().list_buckets()["Buckets"]] == ["admitted"]
