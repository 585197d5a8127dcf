"""objfs.cluster.member — one node's part in a cluster, run by `objfs serve`.

`ClusterMember.run` (for `nursery.start`) brings the node into its cluster:

1. starts the Raft member (objfs.cluster.raft) on the journal in the data
   directory, with the peers `cluster.json` names;
2. makes the store commit through Raft (`Store.replicate_with`);
3. serves the internal API (join, admit, status) on `api_address`;
4. a node that joined but does not vote yet asks a peer to admit it;
5. waits until it has applied what the leader had committed (its index is
   then rebuilt from the whole log), gives the store its space map back, and
   on the first node's first start writes the catalog's first entry;

and only then reports started, so S3 and the mount open over a store that is
current. Leaving closes the Raft member (its journal is durable throughout).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, final

import trio

from objfs.cluster import peers
from objfs.cluster.api import create_cluster_app
from objfs.cluster.catalog import Catalog
from objfs.cluster.raft import Raft, start_raft
from objfs.cluster.remote import MAX_READ_BYTES, RemoteDevice
from objfs.cluster.replication import Replicator
from objfs.cluster.state import ClusterState, journal_path, save
from objfs.errors import InvalidArgument, ObjfsError, Unavailable
from objfs.store import Store
from objfs.store.types import device_node_number

log = logging.getLogger(__name__)

Listen = Callable[..., Awaitable[Any]]
ADMIT_RETRY_S = 1.0


@final
class ClusterMember:
    def __init__(self, store: Store, state: ClusterState, data_dir: str) -> None:
        self.store = store
        self.state = state
        self.data_dir = data_dir
        self.catalog = Catalog()
        self.replicator = Replicator(store, self.catalog, state.node_number)
        self.raft: Raft | None = None
        self.waiting_for = "starting the Raft member"
        self._peers_changed = trio.Event()
        self._remote: dict[int, RemoteDevice] = {}

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        listen: Listen,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`listen(app, address, task_status=)` serves the internal API (for
        `nursery.start`; started with the listening addresses)."""
        state = self.state
        self.replicator.on_catalog_change = self._peers_changed.set
        self.raft = await start_raft(
            me=state.raft_address,
            others=list(state.peers),
            journal_path=journal_path(self.data_dir),
            secret=state.secret,
            deliver=self.replicator.deliver,
            on_caught_up=self.replicator.mark_caught_up,
        )
        self.replicator.raft = self.raft
        self.store.replicate_with(self.replicator)
        self.store.datapath.remote = self.remote_device
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(listen, create_cluster_app(self), state.api_address)
                if not state.admitted:
                    self.waiting_for = "admission into the cluster"
                    await self._ask_admission()
                self.waiting_for = "catching up with the cluster's log"
                await self.replicator.caught_up.wait()
                self.store.rebuild_space()
                if state.node_number == 0 and self.catalog.cluster_id is None:
                    await self.replicator.change_catalog(
                        {
                            "op": "init_v1",
                            "cluster_id": state.cluster_id,
                            "name": state.name,
                            "raft_address": state.raft_address,
                            "api_address": state.api_address,
                        }
                    )
                await self._save_peers()
                nursery.start_soon(self._keep_peers)
                nursery.start_soon(self.replicator.run_barriers)
                self.waiting_for = ""
                log.info(
                    "in cluster %s as node %d (%s); Raft on %s",
                    state.cluster_id,
                    state.node_number,
                    state.name,
                    state.raft_address,
                )
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                raft, self.raft = self.raft, None
                self.replicator.raft = None
                await trio.to_thread.run_sync(raft.close)

    async def _ask_admission(self) -> None:
        """Ask the peers, in turn, until one has made this node a voting member."""
        body = {"number": self.state.node_number}
        while True:
            for address in self._peer_api_addresses():
                try:
                    await trio.to_thread.run_sync(
                        functools.partial(
                            peers.call,
                            address,
                            self.state.secret,
                            "POST",
                            "/cluster/v1/admit",
                            body,
                        )
                    )
                except ObjfsError as exc:
                    log.warning("admission through %s: %s", address, exc)
                    continue
                self.state = replace(self.state, admitted=True)
                await trio.to_thread.run_sync(save, self.data_dir, self.state)
                log.info("admitted into the cluster as node %d", self.state.node_number)
                return
            await trio.sleep(ADMIT_RETRY_S)

    def _peer_api_addresses(self) -> list[str]:
        known = [
            n.api_address for n in self.catalog.nodes.values() if n.number != self.state.node_number
        ]
        return known or list(self.state.peer_apis)

    async def _keep_peers(self) -> None:
        while True:
            await self._peers_changed.wait()
            self._peers_changed = trio.Event()
            await self._save_peers()

    async def _save_peers(self) -> None:
        members = self.catalog.members()
        updated = self.state.with_peers(
            [n.raft_address for n in members], [n.api_address for n in members]
        )
        if updated != self.state and members:
            self.state = updated
            await trio.to_thread.run_sync(save, self.data_dir, updated)

    # -- the internal API's work ----------------------------------------------------------

    async def admit_join(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new node asks to join: give it a number (committed) and the peers to find."""
        try:
            name = str(body["name"])
            raft_address = str(body["raft_address"])
            api_address = str(body["api_address"])
        except KeyError as exc:
            raise InvalidArgument(f"a join needs {exc}") from None
        await self.replicator.caught_up.wait()
        number = await self.replicator.change_catalog(
            {
                "op": "add_node_v1",
                "name": name,
                "raft_address": raft_address,
                "api_address": api_address,
            }
        )
        members = self.catalog.members()
        return {
            "cluster_id": self.catalog.cluster_id,
            "node_number": number,
            "peers": [n.raft_address for n in members],
            "peer_apis": [n.api_address for n in members],
        }

    async def admit_member(self, number: int) -> None:
        """Make a joined node a voting member: through Raft's membership change, then
        the catalog says so. Asked by the node itself once it runs."""
        node = self.catalog.node(number)
        if node.admitted:
            return
        raft = self.raft
        if raft is None:
            raise Unavailable("the cluster member is stopping")
        done = trio.Event()
        outcome: list[str | None] = []

        def finished(reason: str | None) -> None:
            outcome.append(reason)
            done.set()

        raft.add_member(node.raft_address, finished)
        with trio.move_on_after(30):
            await done.wait()
        if not outcome:
            raise Unavailable(f"adding {node.raft_address} to Raft took too long")
        if outcome[0] is not None:
            raise Unavailable(f"adding {node.raft_address} to Raft: {outcome[0]}")
        await self.replicator.change_catalog({"op": "admitted_v1", "number": number})
        log.info("node %d (%s) is a voting member now", number, node.name)

    async def read_local(self, device_index: int, ranges: list[tuple[int, int]]) -> bytes:
        """Bytes of this node's device for another node's reader (which checks them)."""
        device = self.store.devices.get(device_index)
        if device is None or device_node_number(device_index) != self.state.node_number:
            raise InvalidArgument(f"device {device_index} is not an open device of this node")
        if sum(length for _, length in ranges) > MAX_READ_BYTES or any(
            offset < 0 or length < 0 or offset + length > device.size_bytes
            for offset, length in ranges
        ):
            raise InvalidArgument(
                f"ranges outside device {device_index}, or more than {MAX_READ_BYTES} bytes"
            )
        return b"".join(await device.read_many(ranges))

    def remote_device(self, device_index: int) -> RemoteDevice | None:
        """Another node's device, to read fragments from (None: ours, or no such node)."""
        number = device_node_number(device_index)
        node = self.catalog.nodes.get(number)
        if node is None or number == self.state.node_number:
            return None
        device = self._remote.get(device_index)
        if device is None or device.api_address != node.api_address:
            device = self._remote[device_index] = RemoteDevice(
                device_index, node.api_address, self.state.secret
            )
        return device

    def status(self) -> dict[str, Any]:
        raft = self.raft
        return {
            "cluster_id": self.state.cluster_id,
            "node_number": self.state.node_number,
            "name": self.state.name,
            "raft_address": self.state.raft_address,
            "api_address": self.state.api_address,
            "caught_up": self.replicator.caught_up.is_set(),
            "applied_index": self.replicator.applied_index,
            "failure": self.replicator.failure,
            "raft": {} if raft is None else raft.status(),
            "catalog": self.catalog.describe(),
        }
