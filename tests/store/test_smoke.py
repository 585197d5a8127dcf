"""The store's basic promise on in-memory devices: what is put is read back, in order.

Method: drive the Store API directly; the `store` fixture checks fsck at the end.
"""

from __future__ import annotations

import os

from objfs.store import Store


async def test_put_get_list_delete_round_trip(store: Store) -> None:
    await store.create_bucket("alpha")
    small, large = b"hello", os.urandom(1_000_000)
    await store.put_object("alpha", "dir/small", small)
    info = await store.put_object("alpha", "large", large)
    assert await store.get_object("alpha", "dir/small") == small
    assert await store.get_object("alpha", "large") == large
    assert info.size_bytes == len(large)
    page = store.list_objects("alpha", delimiter="/")
    assert [o.key for o in page.objects] == ["large"]
    assert page.common_prefixes == ("dir/",)
    await store.delete_object("alpha", "large")
    assert [o.key for o in store.list_objects("alpha").objects] == ["dir/small"]
