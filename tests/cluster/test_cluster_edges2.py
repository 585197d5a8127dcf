"""More edge paths of the cluster code, each once a bug: real nodes on loopback
(tests/cluster/cluster_nodes.py), driven through the internal API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import signal
import time

import crc32c
import pytest
from cluster_nodes import SECRET, Cluster, Member, send
from test_cluster_faults import LARGE_BYTES, leader_of

from objfs.cluster import peers


def signed_headers(method: str, target: str, body: bytes) -> dict[str, str]:
    """The headers a node signs a request with."""
    return peers.signed_headers(SECRET, method, target, body)


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


MiB = 1 << 20


def test_a_replayed_internal_request_is_refused(cluster: Cluster) -> None:
    """An internal request was accepted again and again for as long as its
    signature time was within 300 s of the node's clock. Whoever captured one
    could replay it: a write took another fragment's worth of space for an
    hour, and a forget freed whatever fragment the node had placed in the
    space since (two fragments in one place once that one's record applies)."""
    (node,) = cluster.start(1)

    def captured(target: str, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        return target, body, signed_headers("POST", target, body)

    def sent(request: tuple[str, bytes, dict[str, str]]) -> tuple[int, bytes]:
        return send(node.api_address, "POST", *request, timeout=30)

    def pending() -> int:
        count: int = node.status()["placement"]["pending_fragments"]
        return count

    data = random.randbytes(MiB)
    write = captured(f"/cluster/v1/write?device=0&size={MiB}&crc={crc32c.crc32c(data)}", data)
    status, answer = sent(write)
    assert status == 200, answer
    first = json.loads(answer)
    assert sent(write)[0] == 401
    assert pending() == 1

    extent = [0, first["offset"], first["length"]]
    forget = captured("/cluster/v1/forget", json.dumps({"extents": [extent]}).encode())
    assert sent(forget) == (200, b'{"freed": 1}\n')
    status, answer = sent(captured(write[0], data))  # the same bytes again, in the same place
    assert status == 200 and json.loads(answer) == first, answer
    assert sent(forget)[0] == 401
    assert pending() == 1

    node.kill()  # a node that starts again has forgotten what it accepted
    node.serve()
    node.ready()
    assert sent(forget)[0] == 401
    assert sent(write)[0] == 401
    assert pending() == 1


def test_nonces_are_forgotten_once_their_time_is_out_of_the_window() -> None:
    """What a node remembers against replays stays bounded."""
    seen = peers.SeenNonces(1000.0)
    assert seen.check("00" * 16, 999, 1000.5) is not None  # signed before the start
    for second in range(1000, 1000 + 2 * peers.MAX_SKEW_S):
        assert seen.check(f"{second:032x}", second, second + 0.5) is None
        assert seen.check(f"{second:032x}", second, second + 0.5) is not None
    assert len(seen) == peers.MAX_SKEW_S  # those still within the window


def test_a_request_signed_without_a_nonce_is_refused(cluster: Cluster) -> None:
    """A request signed as objfs signed them before nonces (no X-Objfs-Nonce; the
    signed message ends at the time) was still accepted, and could be replayed
    for as long as its time was in the window. The nodes of a cluster are
    upgraded together, so there is no older node to accept it from: it is
    refused like a bad signature, before its body is used."""
    (node,) = cluster.start(1)
    data = random.randbytes(MiB)
    target = f"/cluster/v1/write?device=0&size={MiB}&crc={crc32c.crc32c(data)}"
    when = int(time.time())
    message = f"POST\n{target}\n{hashlib.sha256(data).hexdigest()}\n{when}".encode()
    without_nonce = {
        peers.TIME_HEADER: str(when),
        peers.SIGNATURE_HEADER: hmac.new(peers._key(SECRET), message, hashlib.sha256).hexdigest(),
    }
    status, answer = send(node.api_address, "POST", target, data, without_nonce, 30)
    assert status == 401 and b"nonce" in answer, answer
    assert node.status()["placement"]["pending_fragments"] == 0

    status, answer = send(
        node.api_address, "POST", target, data, without_nonce | {peers.NONCE_HEADER: ""}, 30
    )
    assert status == 401, answer
    status, answer = send(
        node.api_address, "POST", target, data, signed_headers("POST", target, data), 30
    )
    assert status == 200, answer
    assert node.status()["placement"]["pending_fragments"] == 1


def test_a_node_skipped_after_a_timeout_is_still_read_when_nothing_else_is_left(
    cluster: Cluster,
) -> None:
    """A node that fails one call (here: stopped, so a read times out) is skipped
    for a while; reads carry on without it. Once another node is lost too, its
    fragments are all that is left: a read must try it rather than answer that
    intact bytes cannot be given back (seen in CI: test_cluster_faults)."""
    members = cluster.start(3)
    cluster.wait_for_members(3)
    members[0].s3().create_bucket(Bucket="load")
    while not all(m.status()["placement"]["policy"].startswith("4+2") for m in members):
        time.sleep(0.1)
    bodies = {f"old{i}": random.randbytes(LARGE_BYTES) for i in range(6)}
    for key, body in bodies.items():
        members[0].s3().put_object(Bucket="load", Key=key, Body=body)
    leader = leader_of(members)
    reader, other = [m for m in members if m is not leader]
    other.kill(signal.SIGSTOP)
    client = reader.s3(read_timeout=60)
    for key, body in bodies.items():  # degraded: other's fragments time out once
        assert client.get_object(Bucket="load", Key=key)["Body"].read() == body
    assert reader.status()["placement"]["unreachable"]
    other.kill(signal.SIGCONT)
    leader.kill()
    deadline = time.monotonic() + 30
    while True:  # a new leader
        try:
            client.head_bucket(Bucket="load")
            break
        except Exception:
            assert time.monotonic() < deadline, "no new leader in 30 s"
            time.sleep(0.2)
    for key, body in bodies.items():
        assert client.get_object(Bucket="load", Key=key)["Body"].read() == body
