"""A cluster of three real nodes on loopback: one namespace through every node.

Method: `objfs cluster init` + `objfs cluster join` + `objfs serve` in child
processes (tests/cluster/cluster_nodes.py), driven by boto3 against each
node's own S3 port. "Immediately" means the next call, on another node, with
no sleep between.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pickle
import random
import socket
import time

import crc32c
from cluster_nodes import SECRET, Cluster

from objfs.cluster import peers


def content(name: str, size: int) -> bytes:
    return random.Random(hashlib.sha256(name.encode()).digest()).randbytes(size)


def test_three_nodes_serve_one_namespace(cluster: Cluster) -> None:
    first, second, third = cluster.start(3, mount_first=True)
    cluster.wait_for_members(3)

    first.s3().create_bucket(Bucket="shared")
    assert "shared" in [b["Name"] for b in third.s3().list_buckets()["Buckets"]]

    small = content("small", 50_000)
    second.s3().put_object(Bucket="shared", Key="dir/small", Body=small)
    got = third.s3().get_object(Bucket="shared", Key="dir/small")
    assert got["Body"].read() == small
    listed = third.s3().list_objects_v2(Bucket="shared", Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/small"]

    # Through node 0's mount, written on node 1 a moment ago.
    with open(os.path.join(first.mountpoint, "shared", "dir", "small"), "rb") as file:
        assert file.read() == small

    # A file written through the mount on node 0 is an object on node 2 at once.
    path = os.path.join(first.mountpoint, "shared", "from-mount")
    with open(path, "wb") as file:
        file.write(b"written through FUSE on node 0")
        file.flush()
        os.fsync(file.fileno())
    assert third.s3().get_object(Bucket="shared", Key="from-mount")["Body"].read() == (
        b"written through FUSE on node 0"
    )

    # Deletes and overwrites are seen everywhere too.
    third.s3().put_object(Bucket="shared", Key="dir/small", Body=b"v2")
    assert second.s3().get_object(Bucket="shared", Key="dir/small")["Body"].read() == b"v2"
    first.s3().delete_object(Bucket="shared", Key="dir/small")
    assert "Contents" not in second.s3().list_objects_v2(Bucket="shared", Prefix="dir/")

    # Large objects: 4+2 stripes placed over the three nodes (two fragments on
    # each), read by any node through the others' internal APIs, ranges included.
    large = content("large", 5 << 20)
    second.s3().put_object(Bucket="shared", Key="large", Body=large)
    for member in (first, second, third):
        placement = member.status()["placement"]
        assert placement["active"], placement
        assert placement["policy"].startswith("4+2") and placement["survives_node_loss"]
    sent = second.status()["placement"]
    # Two stripes (4 MiB and 1 MiB of data), four of each six fragments sent away.
    assert sent["fragments_sent"] >= 8 and sent["bytes_sent"] >= 5 << 20, sent
    assert third.s3().get_object(Bucket="shared", Key="large")["Body"].read() == large
    assert [m.status()["placement"]["pending_fragments"] for m in (first, third)] == [0, 0]

    # A PUT whose client goes away after 9 of its 12 MiB: the stripes node 1
    # placed are given up, and nodes 0 and 2 free their fragments when told
    # (before, they held them for an hour).
    url = second.s3(signature_version="s3v4").generate_presigned_url(
        "put_object", Params={"Bucket": "shared", "Key": "cut"}, ExpiresIn=300
    )
    target = url.split(second.s3_address, 1)[1]
    host, port = second.s3_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            f"PUT {target} HTTP/1.1\r\nHost: {second.s3_address}\r\n"
            f"Content-Length: {12 << 20}\r\n\r\n".encode()
        )
        try:
            connection.sendall(content("cut", 9 << 20))
        except BrokenPipeError:
            raise AssertionError(connection.recv(65536)) from None
        time.sleep(1.0)  # the two full stripes placed before the client goes
    deadline = time.monotonic() + 20
    while any(m.status()["placement"]["pending_fragments"] for m in (first, third)):
        assert time.monotonic() < deadline, [m.status()["placement"] for m in (first, third)]
        time.sleep(0.2)
    assert second.status()["placement"]["abandoned_fragments_told"] >= 4
    assert "Contents" not in second.s3().list_objects_v2(Bucket="shared", Prefix="cut")
    ranged = first.s3().get_object(Bucket="shared", Key="large", Range="bytes=3000000-3100000")
    assert ranged["Body"].read() == large[3000000:3100001]
    with open(os.path.join(first.mountpoint, "shared", "large"), "rb") as file:
        file.seek(4 << 20)
        assert file.read(65536) == large[4 << 20 : (4 << 20) + 65536]

    status = first.status()
    assert status["raft"]["state"] == "leader"
    assert {n["name"] for n in status["catalog"]["nodes"]} == {"node0", "node1", "node2"}
    shown = first.cli("cluster", "status")
    assert shown.returncode == 0, shown.stderr
    assert "node2" in shown.stdout and "voting, connected" in shown.stdout
    assert "stripes:    4+2" in shown.stdout and "WARNING" not in shown.stdout, shown.stdout


def test_every_acknowledged_object_survives_killing_all_nodes(cluster: Cluster) -> None:
    members = cluster.start(3)
    cluster.wait_for_members(3)
    members[0].s3().create_bucket(Bucket="durable")
    written = {}
    for i in range(30):
        key = f"k{i:03d}"
        written[key] = content(key, 1000 + i * 997)
        members[i % 3].s3().put_object(Bucket="durable", Key=key, Body=written[key])
    # Overwrites and deletes of placed objects are in the log too: replaying them
    # at restart frees segments before the node's space map is rebuilt.
    s3 = members[1].s3()
    for i in range(20, 30, 2):
        key = f"k{i:03d}"
        written[key] = content(key + "again", 20_000 + i)
        s3.put_object(Bucket="durable", Key=key, Body=written[key])
        s3.delete_object(Bucket="durable", Key=f"k{i + 1:03d}")
        del written[f"k{i + 1:03d}"]
    cluster.restart_all()
    for member in members:
        client = member.s3()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="durable")["Contents"]]
        assert keys == sorted(written)
        for key, body in written.items():
            assert client.get_object(Bucket="durable", Key=key)["Body"].read() == body


def test_a_wrong_secret_cannot_join_and_nothing_is_unpickled(cluster: Cluster) -> None:
    (first,) = cluster.start(1)
    stranger = cluster.add()
    no_secret = stranger.cli(
        "cluster", "join", first.api_address, "--raft-address", stranger.raft_address,
        "--api-address", stranger.api_address,
    )  # fmt: skip
    assert no_secret.returncode == 2
    assert "OBJFS_CLUSTER_SECRET" in no_secret.stderr
    refused = stranger.cli(
        "cluster",
        "join",
        first.api_address,
        "--raft-address",
        stranger.raft_address,
        "--api-address",
        stranger.api_address,
        "--device-count",
        "3",
        "--device-size",
        "64M",
        environ={"OBJFS_CLUSTER_SECRET": "not-the-cluster-secret-at-all-0000"},
    )
    assert refused.returncode != 0
    assert "signature does not match" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not os.path.exists(os.path.join(stranger.data, "cluster.json"))

    # A pickle that would leave a file behind if anyone unpickled it, sent raw to
    # the Raft port: pysyncobj with a password drops what does not decrypt.
    marker = os.path.join(cluster.root, "unpickled")

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    host, port = first.raft_address.split(":")
    for framed in (payload, len(payload).to_bytes(4, "big") + payload):
        with socket.create_connection((host, int(port)), timeout=5) as connection:
            connection.sendall(framed)
            time.sleep(0.3)
    time.sleep(1.0)
    assert not os.path.exists(marker)
    # The node is still a healthy leader of its one-node cluster.
    first.s3().create_bucket(Bucket="still-fine")
    assert first.status()["raft"]["state"] == "leader"

    # The fragment API: unsigned or wrongly signed writes are refused before the
    # body is used; a damaged fragment is refused; a good one is stored, pending.
    fragment = content("fragment", 100_000)
    target = f"/cluster/v1/write?device=0&size={len(fragment)}&crc={crc32c.crc32c(fragment)}"
    assert post(first.api_address, target, fragment, secret=None)[0] == 401
    assert post(first.api_address, target, fragment, secret="another-secret-000000000000")[0] == 401
    damaged = fragment[:-1] + b"\0"
    status, body = post(first.api_address, target, damaged, secret=SECRET)
    assert status == 400 and b"CRC32C" in body
    assert first.status()["placement"]["pending_fragments"] == 0
    status, body = post(first.api_address, target, fragment, secret=SECRET)
    assert status == 200, body
    stored = json.loads(body)
    assert stored["length"] >= len(fragment)
    assert first.status()["placement"]["pending_fragments"] == 1
    read = json.dumps({"device": 0, "ranges": [[stored["offset"], len(fragment)]]}).encode()
    assert post(first.api_address, "/cluster/v1/read", read, secret=SECRET) == (200, fragment)

    # Forgetting a pending fragment frees it, once; nothing else is touched.
    extent = [0, stored["offset"], stored["length"]]
    forget = json.dumps({"extents": [extent]}).encode()
    assert post(first.api_address, "/cluster/v1/forget", forget, secret=None)[0] == 401
    assert post(first.api_address, "/cluster/v1/forget", b"[1]", secret=SECRET)[0] == 400
    other = json.dumps({"extents": [[0, stored["offset"] + (1 << 20), 4096]]}).encode()
    assert forgotten(first.api_address, other) == 0
    assert first.status()["placement"]["pending_fragments"] == 1
    assert forgotten(first.api_address, forget) == 1
    assert first.status()["placement"]["pending_fragments"] == 0
    assert forgotten(first.api_address, forget) == 0


def forgotten(address: str, body: bytes) -> int:
    """How many fragments a node freed when told to forget them."""
    status, answer = post(address, "/cluster/v1/forget", body, secret=SECRET)
    assert status == 200, answer
    freed: int = json.loads(answer)["freed"]
    return freed


def post(address: str, target: str, body: bytes, *, secret: str | None) -> tuple[int, bytes]:
    host, port = address.split(":")
    headers = {} if secret is None else peers.signed_headers(secret, "POST", target, body)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
