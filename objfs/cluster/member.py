"""objfs.cluster.member — one node's part in a cluster, run by `objfs serve`.

`ClusterMember.run` (for `nursery.start`) brings the node into its cluster:

1. starts the Raft member (objfs.cluster.raft) on the journal in the data
   directory, with the peers `cluster.json` names;
2. makes the store commit through Raft (`Store.replicate_with`);
3. serves the internal API (join, admit, status) on `api_address`;
4. a node that joined but does not vote yet asks a peer to admit it;
5. waits until it has applied what the leader had committed (its index is
   then rebuilt from the whole log), gives the store its space map back, takes
   back the fragments still pending from before a restart
   (objfs.cluster.pending), and on the first node's first start writes the
   catalog's first entry;
6. tells the catalog its devices, and from then on places every new stripe
   over the cluster's nodes (objfs.cluster.placement), with the policy the
   catalog's devices allow;
7. starts the scrubber over its own devices' fragments (rebuilt, when
   damaged, from fragments read on other nodes too), and tells other nodes of
   their damaged fragments its reads meet, so they heal them;

and only then reports started, so S3 and the mount open over a store that is
current. Leaving closes the Raft member (its journal is durable throughout).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, final

import crc32c
import trio

from objfs.cluster import moves, peers
from objfs.cluster.api import create_cluster_app
from objfs.cluster.catalog import Catalog
from objfs.cluster.pending import PendingFragments
from objfs.cluster.placement import Placement, choose_cluster_policy, survives_node_loss
from objfs.cluster.raft import Raft, start_raft
from objfs.cluster.remote import (
    MAX_FORGET_EXTENTS,
    MAX_FRAGMENT_BYTES,
    MAX_HEAL_HINTS,
    MAX_READ_BYTES,
    RemoteDevice,
)
from objfs.cluster.replication import Replicator
from objfs.cluster.snapshot import RaftSnapshots
from objfs.cluster.state import ClusterState, journal_path, save, snapshot_path
from objfs.errors import DeviceError, InvalidArgument, ObjfsError, Unavailable
from objfs.store import Store
from objfs.store.erasure import Policy
from objfs.store.types import Extent, Segment, device_node_number

log = logging.getLogger(__name__)

Listen = Callable[..., Awaitable[Any]]
ADMIT_RETRY_S = 1.0
UNREACHABLE_S = 10.0  # a node that failed a call is skipped (reads, placement) this long
_NOTICE_BATCH_S = 1.0  # notices to other nodes (damage, forgets) go out at most this often


@final
class _Outbox:
    """Notices for other nodes, by device, sent in batches of at most `limit` by
    `run`: a node out of reach is told nothing (what it is not told, it finds
    out itself: its scrub finds damage, its pending fragments expire)."""

    def __init__(
        self,
        what: str,
        limit: int,
        send: Callable[[RemoteDevice, list[Any]], Awaitable[object]],
    ) -> None:
        self.what, self.limit, self._send = what, limit, send
        self._items: dict[int, set[Any]] = {}
        self._found = trio.Event()
        self.sent = 0

    def add(self, device_index: int, item: Any) -> None:
        self._items.setdefault(device_index, set()).add(item)
        self._found.set()

    async def run(self, device_of: Callable[[int], RemoteDevice | None]) -> None:
        while True:
            await self._found.wait()
            self._found = trio.Event()
            items, self._items = self._items, {}
            for device_index, found in sorted(items.items()):
                device = device_of(device_index)
                if device is None:
                    continue
                batch = list(found)
                for start in range(0, len(batch), self.limit):
                    try:
                        await self._send(device, batch[start : start + self.limit])
                    except DeviceError as exc:
                        log.warning("could not send %s to %s: %s", self.what, device.path, exc)
                        break
                    self.sent += len(batch[start : start + self.limit])
            await trio.sleep(_NOTICE_BATCH_S)


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
        self._unreachable_until: dict[int, float] = {}  # node -> monotonic time
        self.pending = PendingFragments(data_dir, store.space)
        self.placement = Placement(
            store.datapath,
            self.pending,
            state.node_number,
            shape=store.config.ec_policy,
            backend=store.config.ec_backend,
            devices=self.catalog.devices,
            live=self.reachable,
            remote=self._device_of,
            abandon=lambda extent: self._abandoned.add(extent.device_index, extent),
        )
        self._taking_fragments = False  # the space map is rebuilt: fragment writes welcome
        self.snapshots = RaftSnapshots(
            snapshot_path(data_dir),
            capture=self.replicator.capture,
            install=self.replicator.install,
        )
        # Called on the event loop after every catalog change is applied (the
        # node keeps its S3 users in step with the catalog's: objfs.node).
        self.on_catalog_change: Callable[[], None] = lambda: None
        # Other nodes' fragments reads here found damaged (segment ids): told
        # to their nodes, which heal their own.
        self._damaged = _Outbox("damaged fragments", MAX_HEAL_HINTS, RemoteDevice.report_damage)
        # Fragments other nodes wrote for this node's stripes that no record will
        # name: told to their nodes, which free them (else they wait for their bound).
        self._abandoned = _Outbox("abandoned fragments", MAX_FORGET_EXTENTS, RemoteDevice.forget)
        self.rebalancer = moves.Rebalancer(
            store,
            state.node_number,
            full_policy=self._full_policy,
            all_up=self._all_up,
            retired=self.catalog.retired_devices,
        )

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
        self.replicator.on_catalog_change = self._catalog_changed
        self.replicator.placement = self.placement
        self.store.on_new_segments = self.pending.claim
        self.store.replicate_with(self.replicator)
        self.store.datapath.remote = self.remote_device
        self.store.datapath.last_resort = self._device_of
        self.store.datapath.on_remote_damage = self._remote_damage
        try:
            async with trio.open_nursery() as nursery:
                # Snapshots are written and installed from here; pysyncobj may
                # load one as soon as it starts.
                self.snapshots.nursery = self.replicator.nursery = nursery
                self.raft = await start_raft(
                    me=state.raft_address,
                    others=list(state.peers),
                    journal_path=journal_path(self.data_dir),
                    secret=state.secret,
                    deliver=self.replicator.deliver,
                    on_caught_up=self.replicator.mark_caught_up,
                    snapshots=self.snapshots,
                    snapshot_entries=self.store.config.snapshot_entries,
                )
                self.replicator.raft = self.raft
                await nursery.start(listen, create_cluster_app(self), state.api_address)
                if not state.admitted:
                    self.waiting_for = "admission into the cluster"
                    await self._ask_admission()
                self.waiting_for = "catching up with the cluster's log"
                await self.replicator.caught_up.wait()
                if self.replicator.failure is not None:
                    raise Unavailable(self.replicator.failure)
                # Everything committed before this start applied, then the space map.
                self.waiting_for = "applying what the cluster committed before this start"
                await self.replicator.settle()
                self.store.rebuild_space()
                await self.pending.restore()
                self._taking_fragments = True
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
                nursery.start_soon(self.pending.run)
                nursery.start_soon(self._damaged.run, self.remote_device)
                nursery.start_soon(self._abandoned.run, self.remote_device)
                # Scrub and heal only now: the index they walk is the log's, and
                # each node checks and heals the fragments on its own devices.
                config = self.store.config
                if not config.read_only:
                    nursery.start_soon(
                        functools.partial(
                            self.store.scrubber.run,
                            config.scrub_interval_ms,
                            background_scrub=config.scrub_rate_bytes_per_s > 0,
                        )
                    )
                await self._tell_devices()
                if not config.read_only and config.rebalance_interval_ms:
                    nursery.start_soon(self.rebalancer.run, config.rebalance_interval_ms / 1000)
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
                if raft is not None:
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

    async def _tell_devices(self) -> None:
        """Put this node's devices (all formatted ones, missing ones included) into
        the catalog if it does not list them so; then placement can begin."""
        own = tuple(sorted(self.store.health.device_indexes))
        entry = self.catalog.nodes.get(self.state.node_number)
        if entry is None or entry.devices != own:
            await self.replicator.change_catalog(
                {"op": "devices_v1", "number": self.state.node_number, "devices": list(own)}
            )
        self._update_placement()

    def _catalog_changed(self) -> None:
        self._peers_changed.set()
        self._update_placement()
        self.on_catalog_change()

    def _update_placement(self) -> None:
        """New stripes are placed over the nodes once the catalog lists this node's
        devices, with the policy the catalog's devices allow."""
        devices = self.catalog.devices()
        if self.state.node_number not in devices or not self._taking_fragments:
            return
        counts = {n: len(d) for n, d in devices.items()}
        config = self.store.config
        policy = choose_cluster_policy(config.ec_policy, config.ec_backend, counts)
        datapath = self.store.datapath
        if datapath.placer is None or datapath.policy != policy:
            log.info(
                "new stripes: %s over %d nodes (%d devices)%s",
                policy.describe(),
                len(counts),
                sum(counts.values()),
                "" if survives_node_loss(policy, counts) else "; losing a node can lose data",
            )
        datapath.policy = policy
        datapath.placer = self.placement

    def _full_policy(self) -> Policy | None:
        """The shape for every member, if one keeps a node's loss to m fragments."""
        counts = {n: len(d) for n, d in self.catalog.devices().items()}
        config = self.store.config
        policy = choose_cluster_policy(config.ec_policy, config.ec_backend, counts)
        return policy if survives_node_loss(policy, counts) else None

    def _all_up(self) -> bool:
        """Whether every member that places stripes answers now: Raft is connected
        to it and no call to it failed lately."""
        if self.raft is None:
            return False
        connected = self._raft_connected()
        for number in self.catalog.devices():
            if number == self.state.node_number:
                continue
            node = self.catalog.nodes[number]
            if not self.reachable(number) or not connected.get(node.raft_address):
                return False
        return True

    def _raft_connected(self) -> dict[str, bool]:
        """Raft address -> whether pysyncobj is connected to that peer now."""
        raft = self.raft
        if raft is None:
            return {}
        connected: dict[str, bool] = raft.status().get("peers_connected") or {}
        return connected

    def reachable(self, node_number: int) -> bool:
        """Whether `node_number` has not failed a call in the last `UNREACHABLE_S`."""
        until = self._unreachable_until.get(node_number)
        return until is None or time.monotonic() >= until

    def _mark_unreachable(self, node_number: int) -> None:
        if self.reachable(node_number):
            log.warning("node %d is not answering; skipped for %.0f s", node_number, UNREACHABLE_S)
        self._unreachable_until[node_number] = time.monotonic() + UNREACHABLE_S

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
            name, raft_address, api_address = (
                body[f] for f in ("name", "raft_address", "api_address")
            )
        except KeyError as exc:
            raise InvalidArgument(f"a join needs {exc}") from None
        if not all(isinstance(f, str) and f for f in (name, raft_address, api_address)):
            raise InvalidArgument("a join's name and addresses are non-empty strings")
        for address in (raft_address, api_address):
            host, _, port = address.rpartition(":")
            if not host or not port.isdecimal() or not 0 < int(port) < 65536:
                raise InvalidArgument(f"a join's address {address!r} is not HOST:PORT")
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
        the catalog says so. Asked by the node itself once it runs, and again until
        it is done: an admission cut short between the two steps (its coordinator
        died, or the catalog change failed) finds the node in Raft already and
        only finishes (pysyncobj refuses to add a member twice)."""
        await self.replicator.caught_up.wait()
        node = self.catalog.node(number)
        if node.admitted:
            return
        # After a barrier, a Raft change proposed before it has committed or is gone
        # (a new leader dropped it): the node is in Raft then only if for good.
        await self.store.barrier()
        raft = self.raft
        if raft is None or node.raft_address not in raft.members():
            await self._change_membership("adding", node.raft_address)
        await self.replicator.change_catalog({"op": "admitted_v1", "number": number})
        log.info("node %d (%s) is a voting member now", number, node.name)

    async def _change_membership(self, what: str, address: str) -> None:
        """Add or remove a Raft member (pysyncobj's own log entry) and wait for it."""
        raft = self.raft
        if raft is None:
            raise Unavailable("the cluster member is stopping")
        done = trio.Event()
        outcome: list[str | None] = []

        def finished(reason: str | None) -> None:
            outcome.append(reason)
            done.set()

        if what == "adding":
            raft.add_member(address, finished)
        else:
            raft.remove_member(address, finished)
        with trio.move_on_after(30):
            await done.wait()
        if not outcome:
            raise Unavailable(f"{what} {address} in Raft took too long")
        if outcome[0] is not None:
            raise Unavailable(f"{what} {address} in Raft: {outcome[0]}")

    async def remove_node(self, number: int) -> dict[str, Any]:
        """`objfs cluster remove`: node `number` leaves the cluster for good.

        It is marked leaving (no new stripes go to it, and no record may put a new
        segment on it), every stripe with a fragment on its devices is moved to
        the other nodes (read from any k fragments, so a dead node's stripes move
        too: they are rebuilt from the rest), then it is taken out of the catalog
        and out of Raft. Safe to run again after a failure: it goes on where it
        stopped.

        Raises:
            InvalidArgument: the node is this one, unknown, or the last member.
            Unavailable: stripes could not be moved (fewer than k fragments
                readable, or no room elsewhere), the nodes left that are up would
                be no majority, or the node leads the cluster (stop it first).
        """
        if number == self.state.node_number:
            raise InvalidArgument(
                f"node {number} is this node: run `objfs cluster remove` on another node"
            )
        await self.replicator.caught_up.wait()
        gone = self.catalog.removed.get(number)
        if gone is not None:  # a remove that failed after the catalog change: Raft again
            with contextlib.suppress(Unavailable):  # pysyncobj refuses if already done
                await self._change_membership("removing", gone.raft_address)
            return {"removed": number, "stripes_moved": 0}
        node = self.catalog.node(number)
        if not node.admitted:  # joined, never ran: no stripes, no vote (leave_v1 refuses it)
            await self.replicator.change_catalog({"op": "remove_node_v1", "number": number})
            with contextlib.suppress(Unavailable):  # in Raft only if admitted half way
                await self._change_membership("removing", node.raft_address)
            log.info("node %d (%s), which never ran, is removed", number, node.name)
            return {"removed": number, "stripes_moved": 0}
        self._check_quorum_without(node.raft_address)
        await self.replicator.change_catalog({"op": "leave_v1", "number": number})
        log.info("node %d (%s) is leaving: moving its stripes elsewhere", number, node.name)
        devices = set(node.devices)
        moved = 0
        while True:
            await self.store.barrier()  # every record placed before the leave is applied
            ids = await moves.segments_on(self.store.index, devices)
            if not ids:
                break
            moved_now, failed = await moves.move_segments(self.store, ids)
            moved += moved_now
            if failed:
                raise Unavailable(
                    f"{failed} of {len(ids)} stripes on node {number} could not be moved "
                    "(the log says why: fewer than k fragments readable, or no room "
                    f"on the other nodes); "
                    f"{moved} were. Node {number} stays leaving: bring nodes back and "
                    "run `objfs cluster remove` again"
                )
        raft = self.raft
        leader = None if raft is None else raft.status().get("leader")
        if leader == node.raft_address:
            raise Unavailable(
                f"node {number} leads the cluster; its stripes have been moved: stop it "
                "and run `objfs cluster remove` again once another node leads"
            )
        await self.replicator.change_catalog({"op": "remove_node_v1", "number": number})
        await self._change_membership("removing", node.raft_address)
        log.info("node %d (%s) is removed; %d stripes moved", number, node.name, moved)
        return {"removed": number, "stripes_moved": moved}

    def _check_quorum_without(self, address: str) -> None:
        """Refuse a removal after which the members reachable now would not be a
        majority: the cluster could commit nothing more."""
        connected = self._raft_connected()
        staying = [n.raft_address for n in self.catalog.members() if n.raft_address != address]
        reachable = [a for a in staying if a == self.state.raft_address or connected.get(a)]
        if len(reachable) * 2 <= len(staying):
            raise Unavailable(
                f"without {address} the cluster would have {len(staying)} members of which "
                f"{len(reachable)} are reachable now: no majority, so nothing could be "
                "committed; bring the others back first"
            )

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

    async def write_local(self, device_index: int, data: bytes, size: int, crc: int) -> Extent:
        """Store a fragment another node's stripe placed on this node's device:
        checked, written, flushed and pending before this returns its extent.

        Raises:
            InvalidArgument: not this node's device, or the bytes do not match.
            Unavailable: this node is not ready to take fragments yet, or has
                stopped applying the log (`Replicator.failure`).
            NoSpace: the device is full.
            DeviceError: the device is down or failed.
        """
        if device_node_number(device_index) != self.state.node_number:
            raise InvalidArgument(f"device {device_index} is not a device of this node")
        if not 0 < size <= MAX_FRAGMENT_BYTES or len(data) != size:
            raise InvalidArgument(
                f"a fragment of {len(data)} bytes (said {size}; at most {MAX_FRAGMENT_BYTES})"
            )
        if crc32c.crc32c(data) != crc:
            raise InvalidArgument("the fragment does not match its CRC32C (damaged on the way)")
        if not self._taking_fragments:
            raise Unavailable("this node is still catching up with the cluster")
        if self.replicator.failure is not None:
            # It applies no record any more, so it cannot tell what space is free.
            raise Unavailable(
                f"this node stopped applying the cluster's log ({self.replicator.failure})"
            )
        store = self.store
        extent = await store.datapath.store_fragment(device_index, data, size)
        try:
            try:
                await store.devices[device_index].flush()
            except OSError as exc:
                store.health.mark_down(device_index, f"flush failed: {exc}")
                raise DeviceError(f"device {device_index}: flush failed: {exc}") from None
            await self.pending.add([extent])
        except BaseException:
            store.space.free_extent(extent)
            raise
        return extent

    def heal_hint(self, segment_ids: list[int]) -> int:
        """Reads on another node found this node's fragments of these segments
        damaged: queue each segment still referenced for heal; how many were."""
        queued = 0
        for segment_id in segment_ids:
            segment = self.store.index.segment(segment_id)
            if segment is not None and any(
                device_node_number(f.extent.device_index) == self.state.node_number
                for f in segment.fragments
            ):
                self.store.health.queue_heal(segment)
                queued += 1
        return queued

    def forget_local(self, extents: list[Extent]) -> int:
        """Another node gave up stripes it placed fragments of here: free those of
        `extents` that are this node's and still pending; how many were."""
        freed = 0
        for extent in extents:
            if (
                device_node_number(extent.device_index) == self.state.node_number
                and extent in self.pending.extents
            ):
                self.pending.forget(extent)
                freed += 1
        return freed

    def _remote_damage(self, segment: Segment, number: int) -> None:
        self._damaged.add(segment.fragments[number].extent.device_index, segment.segment_id)

    def remote_device(self, device_index: int) -> RemoteDevice | None:
        """Another node's device, to read fragments from (None: ours, no such node,
        or its node did not answer lately)."""
        if not self.reachable(device_node_number(device_index)):
            return None
        return self._device_of(device_index)

    def _device_of(self, device_index: int) -> RemoteDevice | None:
        number = device_node_number(device_index)
        node = self.catalog.nodes.get(number)
        if node is None or number == self.state.node_number:
            return None
        device = self._remote.get(device_index)
        if device is None or device.api_address != node.api_address:
            device = self._remote[device_index] = RemoteDevice(
                device_index, node.api_address, self.state.secret, self._mark_unreachable
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
            "placement": self._placement_status(),
            "rebalance": {
                "passes": self.rebalancer.passes,
                "moved": self.rebalancer.moved,
                "failed": self.rebalancer.failed,
                "narrow": self.rebalancer.narrow,
            },
            "snapshots": {
                "taken": self.snapshots.taken,
                "installed": self.replicator.snapshots_installed,
                # The newest this node wrote or installed (bytes: of the one it wrote).
                "last_index": max(self.snapshots.last_index, self.replicator.installed_index),
                "last_bytes": self.snapshots.last_bytes,
            },
        }

    def _placement_status(self) -> dict[str, Any]:
        datapath = self.store.datapath
        counts = {n: len(d) for n, d in self.catalog.devices().items()}
        return {
            "active": datapath.placer is not None,
            "policy": datapath.policy.describe(),
            "policy_now": self.placement.policy().describe(),  # for the nodes up
            "survives_node_loss": survives_node_loss(datapath.policy, counts),
            "fragments_sent": self.placement.fragments_sent,
            "bytes_sent": self.placement.bytes_sent,
            "fragments_replaced": self.placement.replaced,
            "stripes_replanned": self.placement.replanned,
            "pending_fragments": len(self.pending),
            "reclaimed_fragments": self.pending.reclaimed,
            "abandoned_fragments_told": self._abandoned.sent,
            "unreachable": sorted(n for n in self._unreachable_until if not self.reachable(n)),
        }
