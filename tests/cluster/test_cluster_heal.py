"""Heal across nodes: each node heals its own fragments, from fragments on the others.

Method: three real nodes (tests/cluster/cluster_nodes.py) hold 4 MiB objects,
each one 4+2 stripe with two fragments on every node. A data fragment is
found on a node's device file by its bytes (the code is systematic: data
fragment i holds the object's i-th MiB after pyeclib's header) and part of it
is overwritten with garbage behind the node's back, fsynced. Then:

- a GET through *another* node reads that fragment over the internal API,
  finds its checksum wrong, still answers the right bytes (degraded read), and
  tells the owning node, which rebuilds the fragment from the others (read
  over the network) and writes it back in place;
- node 0 runs a background scrub every few seconds: garbage put under one of
  its own fragments, which no read touches, is found and healed by it alone.

What is checked: the bytes the clients get, and the bytes on the device
files afterwards (the original ones again), and the nodes' heal counters.
"""

from __future__ import annotations

import json
import os
import random
import time

from cluster_nodes import Cluster, Member

MiB = 1 << 20
PROBE_BYTES = 256  # bytes searched for: unique in random content
DAMAGE_BYTES = 4096


def device_files(member: Member) -> list[str]:
    directory = os.path.join(member.data, "devices")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory))


def find_data_fragments(
    members: list[Member], objects: dict[str, bytes]
) -> dict[tuple[str, int], tuple[Member, str, int]]:
    """(key, data fragment number) -> (node, device file, offset of the MiB it holds)."""
    found = {}
    for member in members:
        for path in device_files(member):
            with open(path, "rb") as file:
                image = file.read()
            for key, body in objects.items():
                for number in range(len(body) // MiB):
                    at = image.find(body[number * MiB : number * MiB + PROBE_BYTES])
                    if at >= 0:
                        found[(key, number)] = (member, path, at)
    return found


def overwrite(path: str, offset: int, data: bytes) -> bytes:
    fd = os.open(path, os.O_RDWR)
    try:
        before = os.pread(fd, len(data), offset)
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return before


def read_at(path: str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def checks(member: Member) -> dict[str, int]:
    assert member.node is not None
    code, body = member.node.admin("/admin/status")
    assert code == 200, body
    result: dict[str, int] = json.loads(body)["checks"]
    return result


def wait_until_healed(path: str, offset: int, original: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while read_at(path, offset, len(original)) != original:
        assert time.monotonic() < deadline, f"{path} at {offset} not healed in {timeout} s"
        time.sleep(0.1)


def three_nodes_holding(
    cluster: Cluster, bucket: str, seed: int
) -> tuple[list[Member], dict[str, bytes]]:
    """Three nodes, and six 4 MiB objects in `bucket` (each one 4+2 stripe)."""
    members = cluster.start(3)
    cluster.wait_for_members(3)
    s3 = members[0].s3()
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(seed)
    objects = {f"object-{n}": rng.randbytes(4 * MiB) for n in range(6)}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return members, objects


def test_each_node_heals_its_own_fragments_from_the_others(cluster: Cluster) -> None:
    # Node 0 scrubs every 3 s; nodes 1 and 2 never scrub on their own, so what
    # heals their fragments is the report of a read elsewhere.
    cluster.extra_config[0] = "\n[store]\nscrub_interval_ms = 3000\n"
    cluster.extra_config[1] = cluster.extra_config[2] = "\n[store]\nscrub_rate_bytes_per_s = 0\n"
    members, objects = three_nodes_holding(cluster, "heal", 20_261_121)
    rng = random.Random(1)
    where = find_data_fragments(members, objects)
    assert len(where) == 4 * len(objects), sorted(where)  # every data fragment found once

    # 1. Heal on read, across nodes: a data fragment on node 1 or 2, read by another node.
    (key, number), (owner, path, offset) = next(
        item for item in sorted(where.items()) if item[1][0].number != 0
    )
    reader = next(m for m in members if m is not owner)
    original = overwrite(path, offset, rng.randbytes(DAMAGE_BYTES))
    before = checks(owner)["healed_fragments"]
    got = reader.s3().get_object(Bucket="heal", Key=key)["Body"].read()
    assert got == objects[key]  # a degraded read: still the right bytes
    assert checks(reader)["bad_fragments"] >= 1
    wait_until_healed(path, offset, original, timeout=20)
    assert checks(owner)["healed_fragments"] == before + 1
    assert read_at(path, offset, MiB) == objects[key][number * MiB : (number + 1) * MiB]

    # 2. Scrub: node 0 finds damage under one of its own fragments nobody reads.
    (key, number), (owner, path, offset) = next(
        item for item in sorted(where.items()) if item[1][0].number == 0
    )
    before = checks(owner)["healed_fragments"]
    original = overwrite(path, offset + 8192, rng.randbytes(DAMAGE_BYTES))
    wait_until_healed(path, offset + 8192, original, timeout=30)
    assert checks(owner)["healed_fragments"] == before + 1
    # Every node reads every object right, and from intact fragments only now.
    bad_before = [checks(each)["bad_fragments"] for each in members]
    for each in members:
        client = each.s3()
        for key, body in objects.items():
            assert client.get_object(Bucket="heal", Key=key)["Body"].read() == body
    assert [checks(each)["bad_fragments"] for each in members] == bad_before


def test_a_replaced_device_is_healed_from_the_other_nodes(cluster: Cluster) -> None:
    """A node loses a device file while stopped; `objfs device replace` adopts a
    fresh one and, once the node runs, it heals onto it from its other devices
    and the other nodes. Proof: with another node then stopped, every object
    still reads right, which needs the replaced device's fragments."""
    members, objects = three_nodes_holding(cluster, "replace", 20_261_122)
    victim = members[2]
    lost = 2 * 256 + 1  # node 2's second device, by its cluster-wide index
    victim.kill()
    os.remove(device_files(victim)[1])
    replaced = victim.cli("device", "replace", str(lost))
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "heals onto it" in replaced.stdout
    victim.serve()
    victim.ready()

    def state_of_lost() -> str:
        assert victim.node is not None
        code, body = victim.node.admin("/admin/status")
        assert code == 200, body
        return next(str(d["state"]) for d in json.loads(body)["devices"] if d["index"] == lost)

    deadline = time.monotonic() + 60
    while state_of_lost() != "up":  # owed until its heal pass finished clean
        assert time.monotonic() < deadline, "the replaced device was not healed in 60 s"
        time.sleep(0.2)
    assert checks(victim)["healed_fragments"] > 0
    # `objfs scrub` on a running cluster node: a pass over its own fragments, clean.
    scrubbed = victim.cli("scrub")
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr
    assert scrubbed.stdout.splitlines()[-1] == "  clean: full redundancy", scrubbed.stdout
    members[1].kill()  # 4+2 with node 1 gone: node 2's two fragments of each are needed
    client = members[0].s3()
    for key, body in objects.items():
        assert client.get_object(Bucket="replace", Key=key)["Body"].read() == body
