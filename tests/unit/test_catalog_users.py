"""The catalog's user changes (users_seed_v1, user_add_v1, user_delete_v1) and the
S3 face's `Users.replace_all`: pure functions, called as every node calls them.

Method: a change either changes the users as stated or raises the stated
ObjfsError and leaves the catalog exactly as it was (compared whole, with its
version counter, before and after), because every node must refuse it alike.
"""

from __future__ import annotations

import copy
import os
import pathlib
from dataclasses import asdict
from typing import Any

import pytest

from objfs.cluster import entries
from objfs.cluster.catalog import Catalog
from objfs.cluster.journal import JournalFile
from objfs.errors import AlreadyExists, InvalidArgument, NotFound, ObjfsError
from objfs.s3.users import User, Users, new_user

ROOT = new_user("root", "ROOTKEY000000000", "root-secret-0123456789")
ALICE = new_user("alice", "ALICEKEY01", "alice-secret-123")
BOB = new_user("bob", "BOBKEY0001", "bob-secret-12345")


def seeded() -> Catalog:
    catalog = Catalog()
    assert catalog.apply({"op": "users_seed_v1", "users": [asdict(ROOT), asdict(ALICE)]})
    return catalog


def add(user: User) -> dict[str, Any]:
    return {"op": "user_add_v1", **asdict(user)}


def refused(catalog: Catalog, change: dict[str, Any], error: type[ObjfsError], words: str) -> None:
    before = (copy.deepcopy(catalog.users), catalog.users_version)
    with pytest.raises(error, match=words):
        catalog.apply(change)
    assert (catalog.users, catalog.users_version) == before


def test_seed_add_and_delete_change_the_users_and_their_version() -> None:
    catalog = seeded()
    assert catalog.user_list() == [ALICE, ROOT] and catalog.users_version == 1
    assert catalog.apply(add(BOB)) == "bob"
    assert catalog.users["bob"] == BOB and catalog.users_version == 2
    assert catalog.apply({"op": "user_delete_v1", "name": "alice"}) == "alice"
    assert [u.name for u in catalog.user_list()] == ["bob", "root"]
    assert catalog.users_version == 3


def test_the_same_add_twice_is_one_user_and_a_second_seed_changes_nothing() -> None:
    catalog = seeded()
    catalog.apply(add(BOB))
    assert catalog.apply(add(BOB)) == "bob" and catalog.users_version == 2
    other_root = new_user("root", "OTHERROOTKEY", "other-root-secret")
    assert catalog.apply({"op": "users_seed_v1", "users": [asdict(other_root)]}) is False
    assert catalog.users["root"] == ROOT and catalog.users_version == 2


def test_a_taken_name_or_access_key_is_refused() -> None:
    catalog = seeded()
    refused(
        catalog, add(new_user("alice", "ANOTHERKEY", "another-secret")), AlreadyExists, "exists"
    )
    refused(
        catalog,
        add(new_user("carol", ALICE.access_key, "carol-secret-1")),
        InvalidArgument,
        "access key 'ALICEKEY01' is taken",
    )
    refused(
        catalog,
        add(new_user("carol", ROOT.access_key, "carol-secret-1")),
        InvalidArgument,
        "is taken",
    )


def test_root_cannot_be_deleted_or_added_and_unknown_users_are_not_found() -> None:
    catalog = seeded()
    refused(catalog, {"op": "user_delete_v1", "name": "root"}, InvalidArgument, "root cannot")
    refused(
        catalog,
        add(new_user("root", "NEWROOTKEY", "new-root-secret")),
        InvalidArgument,
        "root is not added",
    )
    refused(catalog, {"op": "user_delete_v1", "name": "nobody"}, NotFound, "no user 'nobody'")


def test_malformed_user_changes_are_refused_and_change_nothing() -> None:
    catalog = seeded()
    good = asdict(BOB)
    malformed = [
        ({**good, "name": "bad name"}, "user name"),
        ({**good, "access_key": "k!"}, "access key"),
        ({**good, "secret_key": "short"}, "secret key"),
        ({**good, "secret_key": "tab\there-and-long"}, "secret key"),
        ({**good, "canonical_id": "ABC"}, "canonical id"),
        ({**good, "display_name": ""}, "display name"),
        ({**good, "name": 7}, "string fields"),
        ({k: v for k, v in good.items() if k != "secret_key"}, "string fields"),
        ({**good, "admin": "yes"}, "string fields"),
    ]
    for fields, words in malformed:
        refused(catalog, {"op": "user_add_v1", **fields}, InvalidArgument, words)
    refused(catalog, {"op": "user_delete_v1"}, InvalidArgument, "malformed")
    refused(catalog, {"op": "user_delete_v1", "name": ["alice"]}, InvalidArgument, "user name")


def test_a_seed_must_hold_root_and_distinct_users_and_adds_wait_for_it() -> None:
    catalog = Catalog()
    refused(catalog, add(BOB), InvalidArgument, "no users yet")
    refused(catalog, {"op": "users_seed_v1", "users": [asdict(ALICE)]}, InvalidArgument, "no root")
    refused(
        catalog,
        {"op": "users_seed_v1", "users": [asdict(ROOT), asdict(ROOT)]},
        InvalidArgument,
        "names a user twice",
    )
    twin = new_user("twin", ROOT.access_key, "twin-secret-123")
    refused(
        catalog,
        {"op": "users_seed_v1", "users": [asdict(ROOT), asdict(twin)]},
        InvalidArgument,
        "one access key",
    )
    refused(catalog, {"op": "users_seed_v1", "users": asdict(ROOT)}, InvalidArgument, "a list")
    refused(catalog, {"op": "users_seed_v1", "users": ["root"]}, InvalidArgument, "object")
    refused(catalog, {"op": "users_seed_v1"}, InvalidArgument, "malformed")
    assert catalog.users == {} and catalog.users_version == 0


def test_user_changes_replay_alike_through_raft_entries() -> None:
    """Two catalogs fed the same encoded entries end with the same users: what
    every node does with the log."""
    changes = [
        {"op": "users_seed_v1", "users": [asdict(ROOT)]},
        add(ALICE),
        add(new_user("alice", "ALICEKEY02", "alice-secret-999")),  # refused on both
        add(BOB),
        {"op": "user_delete_v1", "name": "alice"},
    ]
    raw = [entries.catalog_entry(0, tag, change) for tag, change in enumerate(changes)]
    results = []
    for _ in range(2):
        catalog = Catalog()
        outcomes = []
        for each in raw:
            try:
                outcomes.append(catalog.apply(entries.decode(each).change()))
            except ObjfsError as exc:
                outcomes.append(type(exc).__name__)
        results.append((outcomes, catalog.user_list(), catalog.users_version))
    assert results[0] == results[1]
    assert results[0] == ([True, "alice", "AlreadyExists", "bob", "alice"], [BOB, ROOT], 4)


def test_replace_all_swaps_the_whole_list_in_memory_only(tmp_path: pathlib.Path) -> None:
    users = Users(str(tmp_path / "users.json"), [ROOT, ALICE])
    users.replace_all([ROOT, BOB])
    assert users.by_access_key(ALICE.access_key) is None
    assert users.secret_for(ALICE.access_key) is None
    assert users.secret_for(BOB.access_key) == BOB.secret_key
    assert users.by_canonical_id(BOB.canonical_id) == BOB and users.get("alice") is None
    assert not os.path.exists(users.path)  # written only by save()
    users.save()
    assert os.stat(users.path).st_mode & 0o777 == 0o600
    assert Users.read(str(tmp_path)).all() == [BOB, ROOT]


def test_the_journal_holding_the_secrets_is_owner_only(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "raft.objfs-journal")
    with open(path, "wb"):
        pass
    os.chmod(path, 0o644)  # as an older objfs, or a careless copy, might leave it
    journal = JournalFile(path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        journal.replace(b"rewritten")
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        journal.close()
