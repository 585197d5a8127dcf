"""objfs.cluster.users — a cluster node's S3 users, kept equal to the catalog's.

The catalog holds the users (objfs.cluster.catalog); the S3 face serves the
`Users` it is given, and `users.json` is only this node's cache of them
(docs/cluster.md, "Users"). `objfs.node` makes one `CatalogUsers` for a
cluster node and wires it to the member.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, final

import trio

from objfs.cluster.catalog import Catalog
from objfs.s3.users import ROOT, User, Users

if TYPE_CHECKING:
    from objfs.cluster.member import ClusterMember

log = logging.getLogger(__name__)


@final
class CatalogUsers:
    """A cluster node's S3 users, kept equal to the catalog's (docs/cluster.md, "Users").

    `catalog_changed` runs on the event loop after every catalog change the
    node applies, catch-up included: when the users changed, the S3 face's
    list is replaced at once and `keep_cache` rewrites `users.json` (in a
    thread), the cache `objfs user list` reads while the node is stopped.
    `adopt`, once the member is caught up, seeds the catalog with this node's
    users if it has none (the first node's first start), else checks the
    catalog's root against OBJFS_ROOT_*; it says whether the root this start
    generated became the cluster's (to be shown).
    """

    def __init__(self, users: Users, *, generated: bool) -> None:
        self.users = users
        # A root made at this start is shown only if it becomes the cluster's.
        self._generated_root = users.get(ROOT) if generated else None
        # The catalog's users last copied. Compared whole, not by a counter: a
        # catalog rebuilt from a snapshot may count its changes differently.
        self._copied: dict[str, User] = {}
        self._dirty = trio.Event()

    def catalog_changed(self, catalog: Catalog) -> None:
        if catalog.users == self._copied:
            return
        self._copied = dict(catalog.users)
        self.users.replace_all(catalog.user_list())
        self._dirty.set()

    async def adopt(self, member: ClusterMember) -> bool:
        catalog = member.catalog
        if not catalog.users and member.state.node_number == 0:
            seed = [asdict(user) for user in self.users.all()]
            await member.replicator.change_catalog({"op": "users_seed_v1", "users": seed})
            log.info("the cluster's users are this node's: %d, root among them", len(seed))
        if not catalog.users:  # the first node has not run since it was made
            log.warning("the cluster's catalog has no users yet: serving this node's own")
            return False
        self.catalog_changed(catalog)
        root = catalog.users.get(ROOT)
        key = os.environ.get("OBJFS_ROOT_ACCESS_KEY")
        secret = os.environ.get("OBJFS_ROOT_SECRET_KEY")
        if root is not None and key and (key, secret) != (root.access_key, root.secret_key):
            log.warning(
                "OBJFS_ROOT_ACCESS_KEY/OBJFS_ROOT_SECRET_KEY differ from the root user in the "
                "cluster's catalog; the catalog's root (access key %s) is used: a cluster's "
                "users live in its catalog",
                root.access_key,
            )
        return self._generated_root is not None and self._generated_root == root

    async def keep_cache(self) -> None:
        """Rewrite users.json after each change, and once more on the way out."""
        try:
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                await trio.to_thread.run_sync(self.users.save)
        finally:
            if self._dirty.is_set():
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.users.save)
