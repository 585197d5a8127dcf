"""`Store.exchange`: two names swap places in one record (the mount's RENAME_EXCHANGE).

Files with files, directories (prefixes, with every key under them) with
directories, a file with a directory; hard links follow their names; a
refused exchange changes nothing; the result survives a WAL replay.
"""

from __future__ import annotations

import pytest
from link_checks import check_groups, index_state

from objfs.config import StoreConfig
from objfs.errors import InvalidArgument, NoSuchKey
from objfs.store import Store, open_store
from objfs.store.testing import MemoryDevice

BUCKET = "swap"


def keys(store: Store) -> dict[str, bytes | None]:
    return {info.key: None for info in store.list_objects(BUCKET, limit=1000).objects}


async def contents(store: Store) -> dict[str, bytes]:
    return {key: await store.get_object(BUCKET, key) for key in keys(store)}


async def test_files_directories_and_a_file_with_a_directory(
    store: Store, memory_devices: list[MemoryDevice], small_config: StoreConfig
) -> None:
    await store.create_bucket(BUCKET)
    big = bytes(range(256)) * 4096  # segments, not inline bytes
    for key, data in {
        "a": b"one",
        "b": big,
        "d1/": b"",
        "d1/x": b"x in d1",
        "d2/y": b"y in d2",
        "d2/sub/z": b"z",
    }.items():
        await store.put_object(BUCKET, key, data)
    await store.link_object(BUCKET, "b", "d1/link-to-b")

    await store.exchange(BUCKET, "a", "b")
    assert await store.get_object(BUCKET, "a") == big
    assert await store.get_object(BUCKET, "b") == b"one"
    assert store.head_object(BUCKET, "a").links == ("a", "d1/link-to-b")  # the link follows
    check_groups(store, BUCKET)

    await store.exchange(BUCKET, "d1/", "d2/")
    assert await contents(store) == {
        "a": big,
        "b": b"one",
        "d1/sub/z": b"z",
        "d1/y": b"y in d2",
        "d2/": b"",
        "d2/link-to-b": big,
        "d2/x": b"x in d1",
    }
    assert store.head_object(BUCKET, "a").links == ("a", "d2/link-to-b")
    check_groups(store, BUCKET)

    await store.exchange(BUCKET, "b", "d1/")  # a file and a directory
    assert await store.get_object(BUCKET, "d1") == b"one"
    assert await store.get_object(BUCKET, "b/y") == b"y in d2"
    assert "d1/y" not in keys(store)

    before = index_state(store)
    with pytest.raises(NoSuchKey):
        await store.exchange(BUCKET, "a", "missing")
    with pytest.raises(InvalidArgument):
        await store.exchange(BUCKET, "b/", "b/sub/")  # one inside the other
    with pytest.raises(InvalidArgument):
        await store.exchange(BUCKET, "d2/", "d2/x")
    assert index_state(store) == before

    expected = await contents(store)
    await store.checkpoint(force=True)
    await store.exchange(BUCKET, "a", "d1")  # after the checkpoint: replayed from the WAL
    expected["a"], expected["d1"] = expected["d1"], expected["a"]
    async with open_store(small_config, devices=memory_devices) as reopened:
        assert await contents(reopened) == expected
        check_groups(reopened, BUCKET)
