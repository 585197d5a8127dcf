"""`objfs cluster remove`: a dead node's stripes are rebuilt on the others first.

Method: four real nodes (tests/cluster/cluster_nodes.py) of three 64 MiB
devices each hold sixteen objects of 1 MiB and a few small ones; every large
object is one 4+2 stripe with at most two fragments on any node (placed at
random), so some stripes surely have three or four on nodes 2 and 3
together. Node 3 is killed (-9) and `objfs cluster remove 3` is run through
node 0: each stripe with a fragment on node 3 is read from the others
(degraded), stored again as a new stripe on nodes 0 to 2, and the index
points at it (MOVE_SEGMENT); then node 3 is taken out of the catalog and out
of Raft.

What is checked: the command's answer and exit code; the catalog on every
node that is left (three voting members, node 3 gone, 4+2 still); that
writes go on after; and the proof the stripes moved: with node 2 killed as
well, every object still reads byte-identical through nodes 0 and 1 (a
stripe still holding three fragments on nodes 2 and 3 would have only three
of the four it needs). Removing the node the command runs on, an
unknown node, or one without which the nodes up would be no majority, is
refused with a message.
"""

from __future__ import annotations

import random

from cluster_nodes import Cluster

MiB = 1 << 20


def test_removing_a_dead_node_moves_its_stripes_and_leaves_three_members(
    cluster: Cluster,
) -> None:
    members = cluster.start(4)
    cluster.wait_for_members(4)
    s3 = members[0].s3()
    s3.create_bucket(Bucket="leave")
    rng = random.Random(20_261_121)
    objects = {f"big-{n}": rng.randbytes(1 * MiB) for n in range(16)}
    objects |= {f"small-{n}": rng.randbytes(10_000 * (n + 1)) for n in range(3)}
    for key, body in objects.items():
        s3.put_object(Bucket="leave", Key=key, Body=body)

    refused = members[0].cli("cluster", "remove", "0")
    assert refused.returncode != 0 and "this node" in refused.stderr, refused.stderr
    refused = members[0].cli("cluster", "remove", "9")
    assert refused.returncode != 0 and "no node number 9" in refused.stderr, refused.stderr

    members[3].kill()
    done = members[0].cli("cluster", "remove", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node 3 is removed from the cluster" in done.stdout, done.stdout
    moved = int(done.stdout.rsplit("(", 1)[1].split()[0])
    assert moved >= 4, done.stdout  # sixteen 4+2 stripes over four nodes: many touch node 3

    for member in members[:3]:
        status = member.status()
        numbers = [n["number"] for n in status["catalog"]["nodes"]]
        assert numbers == [0, 1, 2], status["catalog"]
        assert status["placement"]["policy"].startswith("4+2 "), status["placement"]
        assert status["placement"]["survives_node_loss"], status["placement"]
    objects["after"] = rng.randbytes(3 * MiB)
    members[1].s3().put_object(Bucket="leave", Key="after", Body=objects["after"])

    members[2].kill()
    for member in members[:2]:
        client = member.s3()
        for key, body in objects.items():
            got = client.get_object(Bucket="leave", Key=key)["Body"].read()
            assert got == body, (member.number, key)

    # Without node 1 the cluster would be nodes 0 and 2, and node 2 is down:
    # no majority. Refused before anything changes.
    refused = members[0].cli("cluster", "remove", "1")
    assert refused.returncode != 0, refused.stdout
    assert "no majority" in refused.stderr, refused.stderr
    assert [n["leaving"] for n in members[0].status()["catalog"]["nodes"]] == [False] * 3
    for key, body in objects.items():
        assert members[1].s3().get_object(Bucket="leave", Key=key)["Body"].read() == body
