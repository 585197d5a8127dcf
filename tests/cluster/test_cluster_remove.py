"""Moving stripes between nodes: `objfs cluster remove`, and rebalancing.

Method: four real nodes (tests/cluster/cluster_nodes.py) of three 64 MiB
devices each, rebalancing every 2 s. They hold sixteen objects of 1 MiB and a
few small ones; every large object is one 4+2 stripe with at most two
fragments on any node (placed at random), so some stripes surely have three
or four on nodes 2 and 3 together.

1. Node 3 is killed (-9) and `objfs cluster remove 3` is run through node 0:
   each stripe with a fragment on node 3 is read from the others (degraded),
   stored again as a new stripe on nodes 0 to 2, and the index points at it
   (MOVE_SEGMENT); then node 3 is taken out of the catalog and out of Raft.
2. Node 2 is killed too. Every object still reads byte-identical through
   nodes 0 and 1: the proof the stripes moved (one still holding three
   fragments on nodes 2 and 3 would have only three of the four it needs).
   Objects written now get the shape for two nodes, 2+2. Removing node 1 is
   refused: without it the members up (node 0) would be no majority.
3. Node 2 comes back. Nodes 0 and 1 store the 2+2 stripes again as 4+2 over
   all three nodes (each the stripes whose first fragment it holds): node 2's
   device files then hold bytes of objects written while it was down, the
   nodes' counters say every narrow stripe was moved, and every object reads
   byte-identical through every node.

Removing the node the command runs on, or an unknown node, is refused with
a message.
"""

from __future__ import annotations

import os
import random
import time

from cluster_nodes import Cluster, Member

MiB = 1 << 20
CHUNK = 256 * 1024  # what one data fragment of a 1 MiB object holds in 4+2


def get_all(member: Member, objects: dict[str, bytes]) -> None:
    client = member.s3()
    for key, body in objects.items():
        got = client.get_object(Bucket="moves", Key=key)["Body"].read()
        assert got == body, (member.number, key)


def objects_with_bytes_on(member: Member, objects: dict[str, bytes]) -> set[str]:
    """The objects one of whose 4+2 data fragments is on the node's device files."""
    directory = os.path.join(member.data, "devices")
    found = set()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as file:
            image = file.read()
        for key, body in objects.items():
            if any(image.find(body[i : i + 256]) >= 0 for i in range(0, len(body), CHUNK)):
                found.add(key)
    return found


def test_a_removed_node_s_stripes_move_and_narrow_stripes_widen_when_nodes_return(
    cluster: Cluster,
) -> None:
    for number in range(4):
        cluster.extra_config[number] = "\n[store]\nrebalance_interval_ms = 2000\n"
    members = cluster.start(4)
    cluster.wait_for_members(4)
    s3 = members[0].s3()
    s3.create_bucket(Bucket="moves")
    rng = random.Random(20_261_121)
    objects = {f"big-{n}": rng.randbytes(1 * MiB) for n in range(16)}
    objects |= {f"small-{n}": rng.randbytes(10_000 * (n + 1)) for n in range(3)}
    for key, body in objects.items():
        s3.put_object(Bucket="moves", Key=key, Body=body)

    refused = members[0].cli("cluster", "remove", "0")
    assert refused.returncode != 0 and "this node" in refused.stderr, refused.stderr
    refused = members[0].cli("cluster", "remove", "9")
    assert refused.returncode != 0 and "no node number 9" in refused.stderr, refused.stderr

    # 1. Node 3 dies and is removed.
    members[3].kill()
    done = members[0].cli("cluster", "remove", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node 3 is removed from the cluster" in done.stdout, done.stdout
    moved = int(done.stdout.rsplit("(", 1)[1].split()[0])
    assert moved >= 4, done.stdout  # sixteen 4+2 stripes over four nodes: many touch node 3
    for member in members[:3]:
        status = member.status()
        assert [n["number"] for n in status["catalog"]["nodes"]] == [0, 1, 2], status["catalog"]
        assert status["placement"]["policy"].startswith("4+2 "), status["placement"]
        assert status["placement"]["survives_node_loss"], status["placement"]

    # 2. Node 2 dies too: everything reads through nodes 0 and 1; new stripes are 2+2.
    members[2].kill()
    get_all(members[0], objects)
    get_all(members[1], objects)
    written_without_2 = {f"late-{n}": rng.randbytes(1 * MiB) for n in range(8)}
    for key, body in written_without_2.items():
        members[1].s3().put_object(Bucket="moves", Key=key, Body=body)
    objects |= written_without_2
    refused = members[0].cli("cluster", "remove", "1")
    assert refused.returncode != 0 and "no majority" in refused.stderr, refused.stderr
    assert [n["leaving"] for n in members[0].status()["catalog"]["nodes"]] == [False] * 3

    # 3. Node 2 returns: the 2+2 stripes are stored again as 4+2 over three nodes.
    assert not objects_with_bytes_on(members[2], written_without_2)
    members[2].serve()
    members[2].ready()
    deadline = time.monotonic() + 60
    while True:
        rebalance = [m.status()["rebalance"] for m in members[:2]]
        if sum(r["moved"] for r in rebalance) >= len(written_without_2) and not any(
            r["narrow"] for r in rebalance
        ):
            break
        assert time.monotonic() < deadline, f"not rebalanced in 60 s: {rebalance}"
        time.sleep(0.5)
    assert len(objects_with_bytes_on(members[2], written_without_2)) >= 4
    for member in members[:3]:
        get_all(member, objects)
