"""The catalog's apply, entry encoding and the internal API's signatures: pure functions."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from objfs.cluster import entries, peers
from objfs.cluster.catalog import Catalog
from objfs.errors import Corrupted, InvalidArgument
from objfs.store.records import CreateBucket
from objfs.store.types import BucketName

SECRET = "a-cluster-secret-for-the-tests-0123456789"


def init(catalog: Catalog) -> None:
    catalog.apply(
        {
            "op": "init_v1",
            "cluster_id": "c1",
            "name": "n0",
            "raft_address": "h:1",
            "api_address": "h:2",
        }
    )


def test_nodes_are_numbered_in_log_order_and_never_reused() -> None:
    catalog = Catalog()
    init(catalog)
    one = catalog.apply(
        {"op": "add_node_v1", "name": "n1", "raft_address": "h:3", "api_address": "h:4"}
    )
    two = catalog.apply(
        {"op": "add_node_v1", "name": "n2", "raft_address": "h:5", "api_address": "h:6"}
    )
    assert (one, two) == (1, 2)
    assert [n.number for n in catalog.members()] == [0]
    catalog.apply({"op": "admitted_v1", "number": 1})
    assert [n.number for n in catalog.members()] == [0, 1]
    catalog.apply({"op": "remove_node_v1", "number": 2})
    three = catalog.apply(
        {"op": "add_node_v1", "name": "n3", "raft_address": "h:7", "api_address": "h:8"}
    )
    assert three == 3  # 2's device indexes may still be named by records


def test_the_same_join_twice_gets_the_same_number_and_a_clash_is_refused() -> None:
    catalog = Catalog()
    init(catalog)
    join = {"op": "add_node_v1", "name": "n1", "raft_address": "h:3", "api_address": "h:4"}
    assert catalog.apply(join) == catalog.apply(dict(join)) == 1
    with pytest.raises(InvalidArgument, match="already has that name"):
        catalog.apply({**join, "api_address": "h:9"})
    with pytest.raises(InvalidArgument, match="already initialised"):
        init(catalog)


def test_a_bad_change_changes_nothing() -> None:
    catalog = Catalog()
    with pytest.raises(InvalidArgument, match="not initialised"):
        catalog.apply(
            {"op": "add_node_v1", "name": "n1", "raft_address": "h:3", "api_address": "h:4"}
        )
    with pytest.raises(InvalidArgument, match="unknown catalog change"):
        catalog.apply({"op": "drop_everything_v9"})
    with pytest.raises(InvalidArgument, match="malformed"):
        catalog.apply({"op": "init_v1"})
    assert catalog.describe() == {"cluster_id": None, "nodes": []}


def test_entries_round_trip_and_refuse_garbage() -> None:
    record = CreateBucket(BucketName("bucket"), "root", 12345)
    raw = entries.record_entry(7, 99, record)
    entry = entries.decode(raw)
    assert (entry.kind, entry.origin, entry.tag) == (entries.Kind.RECORD, 7, 99)
    assert entry.record() == record
    change = entries.decode(entries.catalog_entry(0, 1, {"op": "admitted_v1", "number": 3}))
    assert change.change() == {"op": "admitted_v1", "number": 3}
    for bad in (b"", b"\x02" + raw[1:], raw[:1] + b"\x09" + raw[2:]):
        with pytest.raises(Corrupted):
            entries.decode(bad)


def test_signatures_bind_method_target_body_time_and_nonce() -> None:
    nonce = "5a" * 16
    signed = peers.signature(SECRET, "POST", "/cluster/v1/join", b"{}", 1000, nonce)
    headers = {
        peers.TIME_HEADER: "1000",
        peers.NONCE_HEADER: nonce,
        peers.SIGNATURE_HEADER: signed,
    }
    assert peers.verify(SECRET, "POST", "/cluster/v1/join", b"{}", headers, 1010) is None
    assert "does not match" in str(
        peers.verify(
            SECRET,
            "POST",
            "/cluster/v1/join",
            b"{}",
            {**headers, peers.NONCE_HEADER: "a5" * 16},
            1010,
        )
    )
    assert "does not match" in str(
        peers.verify(SECRET, "POST", "/cluster/v1/join", b"{ }", headers, 1010)
    )
    assert "does not match" in str(
        peers.verify(SECRET, "GET", "/cluster/v1/join", b"{}", headers, 1010)
    )
    assert "does not match" in str(
        peers.verify("another-secret-0123456789", "POST", "/cluster/v1/join", b"{}", headers, 1010)
    )
    assert "away from" in str(
        peers.verify(SECRET, "POST", "/cluster/v1/join", b"{}", headers, 2000)
    )
    assert peers.verify(SECRET, "POST", "/x", b"", {}, 1000) == "no signature time"
    headers = peers.signed_headers(SECRET, "POST", "/cluster/v1/join", b"{}")
    now = int(headers[peers.TIME_HEADER])
    assert peers.verify(SECRET, "POST", "/cluster/v1/join", b"{}", headers, now) is None


def test_a_request_signed_without_a_nonce_is_refused() -> None:
    """As an objfs before nonces signed it (the message ends at the time), or
    with an empty nonce: no replay could be told, so it is refused."""
    message = f"POST\n/cluster/v1/join\n{hashlib.sha256(b'{}').hexdigest()}\n1000".encode()
    old = hmac.new(peers._key(SECRET), message, hashlib.sha256).hexdigest()
    headers = {peers.TIME_HEADER: "1000", peers.SIGNATURE_HEADER: old}
    for each in (headers, {**headers, peers.NONCE_HEADER: ""}):
        refused = peers.verify(SECRET, "POST", "/cluster/v1/join", b"{}", each, 1010)
        assert refused is not None and "no nonce" in refused


def test_a_node_leaves_before_it_is_removed_and_never_the_last() -> None:
    """Leaving takes a node's devices out of placement and marks them retired
    (no new segment may use them); removal needs it leaving; the last member
    cannot leave."""
    catalog = Catalog()
    init(catalog)
    catalog.apply({"op": "devices_v1", "number": 0, "devices": [0, 1]})
    catalog.apply({"op": "add_node_v1", "name": "n1", "raft_address": "h:3", "api_address": "h:4"})
    catalog.apply({"op": "admitted_v1", "number": 1})
    catalog.apply({"op": "devices_v1", "number": 1, "devices": [256, 257]})
    assert catalog.devices() == {0: (0, 1), 1: (256, 257)}
    with pytest.raises(InvalidArgument, match="not leaving"):
        catalog.apply({"op": "remove_node_v1", "number": 1})
    assert catalog.apply({"op": "leave_v1", "number": 1}) == 1
    assert catalog.apply({"op": "leave_v1", "number": 1}) == 1  # a retry
    assert catalog.devices() == {0: (0, 1)}
    assert catalog.retired_devices() == {256, 257}
    with pytest.raises(InvalidArgument, match="last member"):
        catalog.apply({"op": "leave_v1", "number": 0})
    catalog.apply({"op": "remove_node_v1", "number": 1})
    assert [n.number for n in catalog.members()] == [0]
    assert catalog.retired_devices() == {256, 257}
    assert catalog.removed[1].raft_address == "h:3"
    restored = Catalog()
    restored.restore(catalog.history)
    assert restored.retired_devices() == {256, 257} and restored.devices() == {0: (0, 1)}
