"""S3 users live in the cluster's Raft catalog: made on one node, they sign on every node.

Method: one three-node cluster for the whole file (`objfs cluster init/join` +
`objfs serve` in child processes; tests/cluster/cluster_nodes.py), its tests
run in order. Users are made and deleted with the `objfs user` command against
one node's data directory (the CLI then goes through that node's admin API),
and used with boto3 against the other nodes' S3 ports at once, with no sleep:
bytes and S3 error codes are asserted. A node is then stopped (its cache
answers `user list`, changes are refused), its users.json cache is tampered
with and it is restarted with other OBJFS_ROOT_* keys: the users it serves
come from the log.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import service_node
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from cluster_nodes import Cluster, Member

from objfs.cluster.state import journal_path


@pytest.fixture(scope="module")
def members() -> Iterator[list[Member]]:
    made = Cluster()
    try:
        started = made.start(3)
        made.wait_for_members(3)
        yield started
    finally:
        made.close()


def keys_of(output: str) -> tuple[str, str]:
    access = re.search(r"access key: (\S+)", output)
    secret = re.search(r"secret key: (\S+)", output)
    assert access is not None and secret is not None, output
    return access.group(1), secret.group(1)


def s3_as(member: Member, keys: tuple[str, str]) -> Any:
    """boto3 signing with `keys`, no retries (a refused request must show)."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://{member.s3_address}",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def error_code(call: Any, **arguments: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**arguments)
    code: str = caught.value.response["Error"]["Code"]
    return code


def user_names(member: Member) -> list[str]:
    listed = member.cli("user", "list")
    assert listed.returncode == 0, listed.stderr
    return [line.split("\t")[0] for line in listed.stdout.splitlines()]


def one_line_refusal(done: Any, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert all(word in done.stderr for word in words), done.stderr


def test_a_user_made_on_one_node_signs_on_every_node_until_deleted(
    members: list[Member],
) -> None:
    first, second, third = members
    made = first.cli("user", "create", "alice")
    assert made.returncode == 0, made.stderr
    alice = keys_of(made.stdout)

    # At once on the other nodes: a bucket, an object, read back elsewhere.
    s3_as(second, alice).create_bucket(Bucket="alice-bucket")
    body = os.urandom(70_000)
    s3_as(third, alice).put_object(Bucket="alice-bucket", Key="k", Body=body)
    assert s3_as(second, alice).get_object(Bucket="alice-bucket", Key="k")["Body"].read() == body
    assert s3_as(third, alice).get_object(Bucket="alice-bucket", Key="k")["Body"].read() == body

    # Root's private bucket stays root's on every node.
    first.s3().create_bucket(Bucket="root-private")
    first.s3().put_object(Bucket="root-private", Key="secret", Body=b"root only")
    alice_third = s3_as(third, alice)
    assert error_code(alice_third.get_object, Bucket="root-private", Key="secret") == (
        "AccessDenied"
    )
    assert error_code(alice_third.list_objects_v2, Bucket="root-private") == "AccessDenied"
    assert third.s3().get_object(Bucket="root-private", Key="secret")["Body"].read() == (
        b"root only"
    )

    # Listed by every running node; mistakes are one line, same as on one node.
    assert user_names(second) == ["alice", "root"] == user_names(third)
    one_line_refusal(second.cli("user", "create", "alice"), "user 'alice' exists")
    one_line_refusal(third.cli("user", "delete", "root"), "root cannot be deleted")
    one_line_refusal(first.cli("user", "delete", "nobody"), "no user 'nobody'")
    taken = second.cli("user", "create", "mallory", "--access-key", alice[0])
    one_line_refusal(taken, f"access key '{alice[0]}' is taken")
    one_line_refusal(first.cli("user", "create", "bad name"), "user name")

    deleted = third.cli("user", "delete", "alice")
    assert deleted.returncode == 0, deleted.stderr
    for member in (first, second):
        client = s3_as(member, alice)
        assert error_code(client.list_buckets) == "InvalidAccessKeyId"
        assert error_code(client.get_object, Bucket="alice-bucket", Key="k") == (
            "InvalidAccessKeyId"
        )
    assert user_names(first) == ["root"]

    # The journal holds the users' secrets: owner-only on every node.
    for member in members:
        assert os.stat(journal_path(member.data)).st_mode & 0o777 == 0o600
        assert os.stat(os.path.join(member.data, "users.json")).st_mode & 0o777 == 0o600


def test_users_come_from_the_log_after_a_restart(
    members: list[Member], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = members
    made = first.cli(
        "user", "create", "bob", "--access-key", "BOBKEY0001", "--secret-key", "bob-secret-12345"
    )
    assert made.returncode == 0, made.stderr
    bob = ("BOBKEY0001", "bob-secret-12345")

    assert second.node is not None
    assert second.node.terminate(60) == 0, second.node.log()
    # Stopped: the cache answers `list`; changes need the running node.
    assert user_names(second) == ["bob", "root"]
    one_line_refusal(second.cli("user", "create", "carol"), "catalog", "objfs serve")
    one_line_refusal(second.cli("user", "delete", "bob"), "catalog", "objfs serve")

    # Made while node 1 is down: it learns of carol from the log.
    made = third.cli("user", "create", "carol")
    assert made.returncode == 0, made.stderr
    carol = keys_of(made.stdout)

    # A stale, tampered cache: bob gone, a forged user in his place.
    cache = os.path.join(second.data, "users.json")
    with open(cache, encoding="utf-8") as file:
        listed = json.load(file)
    forged = {
        "name": "forged",
        "access_key": "FORGEDKEY1",
        "secret_key": "forged-secret-123",
        "canonical_id": "f" * 64,
        "display_name": "forged",
    }
    listed["users"] = [u for u in listed["users"] if u["name"] != "bob"] + [forged]
    with open(cache, "w", encoding="utf-8") as file:
        json.dump(listed, file)

    # And other root keys in its environment: the catalog's root wins, with a warning.
    plain_env = service_node.env
    other_root = ("OTHERROOTKEY0", "other-root-secret-0123456789")
    monkeypatch.setattr(
        service_node,
        "env",
        lambda: {
            **plain_env(),
            "OBJFS_ROOT_ACCESS_KEY": other_root[0],
            "OBJFS_ROOT_SECRET_KEY": other_root[1],
        },
    )
    second.serve()
    second.ready()
    assert second.node is not None
    assert "differ from the root user in the cluster's catalog" in second.node.log()

    body = os.urandom(10_000)
    s3_as(second, bob).create_bucket(Bucket="bob-bucket")
    s3_as(second, bob).put_object(Bucket="bob-bucket", Key="b", Body=body)
    assert s3_as(first, bob).get_object(Bucket="bob-bucket", Key="b")["Body"].read() == body
    s3_as(second, carol).create_bucket(Bucket="carol-bucket")
    assert [b["Name"] for b in s3_as(second, carol).list_buckets()["Buckets"]] == ["carol-bucket"]
    assert second.s3().get_object(Bucket="root-private", Key="secret")["Body"].read() == (
        b"root only"
    )
    for refused in (("FORGEDKEY1", "forged-secret-123"), other_root):
        assert error_code(s3_as(second, refused).list_buckets) == "InvalidAccessKeyId"
    assert user_names(second) == ["bob", "carol", "root"]
    # The cache is the catalog's again (rewritten as the node caught up).
    with open(cache, encoding="utf-8") as file:
        cached = {u["name"]: u["access_key"] for u in json.load(file)["users"]}
    assert cached == {"bob": "BOBKEY0001", "carol": carol[0], "root": service_node.ROOT_KEY}

    # A node that restarts with the users already in its catalog seeds nothing again.
    assert first.node is not None
    assert first.node.terminate(60) == 0, first.node.log()
    first.serve()
    first.ready()
    assert s3_as(first, carol).list_buckets()["Buckets"][0]["Name"] == "carol-bucket"
    assert user_names(first) == ["bob", "carol", "root"]
