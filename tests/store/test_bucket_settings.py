"""Bucket settings (the S3 face's ACL, tagging, CORS) are durable like every change:
after a WAL replay, after a checkpoint, and after a power cut.

Method: the `store` fixture's in-memory devices, reopened through open_store.
"""

from __future__ import annotations

import pytest

from objfs.config import StoreConfig
from objfs.errors import NoSuchBucket
from objfs.store import Store, open_store
from objfs.store.testing import MemoryDevice


async def test_settings_are_set_replaced_removed_and_survive_replay_and_checkpoint(
    store: Store, memory_devices: list[MemoryDevice], small_config: StoreConfig
) -> None:
    await store.create_bucket("settings")
    await store.set_bucket_setting("settings", "cors", b"<CORS/>")
    await store.set_bucket_setting("settings", "acl", b"acl-1")
    await store.set_bucket_setting("settings", "acl", b"acl-2")
    info = store.head_bucket("settings")
    assert info.settings == (("acl", b"acl-2"), ("cors", b"<CORS/>"))
    await store.set_bucket_setting("settings", "cors", None)
    assert store.head_bucket("settings").setting("cors") is None
    with pytest.raises(NoSuchBucket):
        await store.set_bucket_setting("nowhere", "acl", b"x")
    crashed = [device.crash() for device in memory_devices]  # replay from the WAL
    async with open_store(small_config, devices=crashed) as reopened:
        assert reopened.head_bucket("settings").settings == (("acl", b"acl-2"),)
        await reopened.checkpoint()
    async with open_store(small_config, devices=crashed) as again:  # from the checkpoint
        assert again.replayed_records == 0
        assert again.head_bucket("settings").setting("acl") == b"acl-2"
