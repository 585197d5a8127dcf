"""objfs.cluster.commands — `objfs cluster init | join | status`.

`init` makes this data directory the first node (node 0) of a new cluster:
formats it if it has no devices yet (a formatted store must hold no bucket:
a cluster's index comes from its log), creates the cluster secret, and writes
`cluster.json`. `join ADDRESS` asks a running node (its internal API address)
for a node number, formats a fresh data directory as that node, and writes
`cluster.json`; the node becomes a voting member when it is first served.
`status` asks the running node, else shows `cluster.json`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import Any

import trio

from objfs import client
from objfs.cluster import peers
from objfs.cluster.state import ClusterState, check_secret, load, new_secret, save, state_path
from objfs.config import NodeConfig
from objfs.errors import UsageError
from objfs.store import open_store
from objfs.store.format import create_data_dir
from objfs.store.superblock import Superblock

SECRET_VARIABLE = "OBJFS_CLUSTER_SECRET"
DEFAULT_RAFT_ADDRESS = "127.0.0.1:9100"
DEFAULT_API_ADDRESS = "127.0.0.1:9101"


def read_secret(secret_file: str | None) -> str | None:
    """The secret from --secret-file, else $OBJFS_CLUSTER_SECRET, else None."""
    if secret_file:
        try:
            with open(secret_file, encoding="utf-8") as file:
                return check_secret(file.read(), f"--secret-file {secret_file}")
        except OSError as exc:
            raise UsageError(f"--secret-file {secret_file}: {exc.strerror}") from None
    value = os.environ.get(SECRET_VARIABLE)
    return None if value is None else check_secret(value, SECRET_VARIABLE)


def _check_address(flag: str, address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{flag}: {address!r} is not HOST:PORT")
    return address


async def _refuse_if_member(data_dir: str) -> None:
    existing = await trio.to_thread.run_sync(load, data_dir)
    if existing is not None:
        raise UsageError(
            f"{data_dir} is already node {existing.node_number} of cluster "
            f"{existing.cluster_id} ({state_path(data_dir)})"
        )


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What `cluster init` and `cluster join` are told about the node they make."""

    name: str | None
    raft_address: str
    api_address: str
    secret_file: str | None
    device_count: int
    device_size_bytes: int | None

    @property
    def node_name(self) -> str:
        return self.name or socket.gethostname()

    async def check(self, config: NodeConfig) -> None:
        """Raises UsageError: already a member, or an address that is not HOST:PORT."""
        await _refuse_if_member(config.store.data_dir)
        _check_address("--raft-address", self.raft_address)
        _check_address("--api-address", self.api_address)

    async def format(self, config: NodeConfig, node_number: int) -> list[Superblock]:
        return await create_data_dir(
            config.store.data_dir,
            device_count=self.device_count,
            device_size_bytes=self.device_size_bytes,
            buffered=config.store.buffered_io,
            node_number=node_number,
        )


async def cluster_init(config: NodeConfig, options: NodeOptions) -> int:
    data_dir = config.store.data_dir
    await options.check(config)
    if config.store.device_paths():
        async with open_store(
            replace(config.store, read_only=True), background_jobs=False
        ) as store:
            buckets = store.index.buckets()
            first = store.superblocks[min(store.superblocks)]
        if first.node_number != 0:
            raise UsageError(f"{data_dir} was formatted as node {first.node_number} of a cluster")
        if buckets:
            raise UsageError(
                f"{data_dir} holds {len(buckets)} bucket(s); a cluster starts from an empty "
                "store (its index comes from the cluster's log). Format a new data directory"
            )
    else:
        first = (await options.format(config, 0))[0]
    cluster_id = str(first.cluster_id)
    given = read_secret(options.secret_file)
    state = ClusterState(
        cluster_id=cluster_id,
        node_number=0,
        name=options.node_name,
        raft_address=options.raft_address,
        api_address=options.api_address,
        secret=given or new_secret(),
        admitted=True,
    )
    await trio.to_thread.run_sync(save, data_dir, state)
    print(f"cluster {cluster_id}: {data_dir} is node 0 ({state.name})")
    print(
        f"  Raft on {state.raft_address}, internal API on {state.api_address}; "
        "start it with `objfs serve`"
    )
    if given is None:
        print(f"  cluster secret (shown once; also in {state_path(data_dir)}): {state.secret}")
    print(
        f"  add nodes with `objfs cluster join {state.api_address}` and the secret in "
        f"${SECRET_VARIABLE}"
    )
    return 0


async def cluster_join(config: NodeConfig, address: str, options: NodeOptions) -> int:
    data_dir = config.store.data_dir
    await options.check(config)
    _check_address("ADDRESS", address)
    if config.store.device_paths():
        raise UsageError(f"{data_dir} already has devices; a node joins with a new data directory")
    secret = read_secret(options.secret_file)
    if secret is None:
        raise UsageError(
            f"joining needs the cluster secret: --secret-file FILE or ${SECRET_VARIABLE}"
        )
    request = {
        "name": options.node_name,
        "raft_address": options.raft_address,
        "api_address": options.api_address,
    }
    answer: dict[str, Any] = await trio.to_thread.run_sync(
        functools.partial(peers.call, address, secret, "POST", "/cluster/v1/join", request)
    )
    number = int(answer["node_number"])
    await options.format(config, number)
    state = ClusterState(
        cluster_id=str(answer["cluster_id"] or uuid.UUID(int=0)),
        node_number=number,
        name=options.node_name,
        raft_address=options.raft_address,
        api_address=options.api_address,
        secret=secret,
    ).with_peers(list(answer["peers"]), list(answer["peer_apis"]))
    await trio.to_thread.run_sync(save, data_dir, state)
    print(f"joined cluster {state.cluster_id} as node {number} ({state.name})")
    print("  start it with `objfs serve`: it becomes a voting member when it first runs")
    return 0


async def cluster_status(config: NodeConfig, *, as_json: bool) -> int:
    data_dir = config.store.data_dir
    state = await trio.to_thread.run_sync(load, data_dir)
    if state is None:
        raise UsageError(
            f"{data_dir} is a single node, not in a cluster (see `objfs cluster init`)"
        )
    node = await trio.to_thread.run_sync(client.find_node, data_dir)
    if node is None:
        print(f"node {state.node_number} ({state.name}) of cluster {state.cluster_id}: not running")
        peers_known = ", ".join(state.peers) or "-"
        print(f"  Raft {state.raft_address}, API {state.api_address}; peers {peers_known}")
        return 0
    status = await trio.to_thread.run_sync(node.call, "GET", "/admin/status")
    cluster = status.get("cluster") or {}
    if as_json:
        print(json.dumps(cluster, indent=1))
        return 0
    print(render_cluster(cluster))
    return 0


async def cluster_remove(config: NodeConfig, number: int) -> int:
    """`objfs cluster remove NODE`, through this data directory's running node."""
    data_dir = config.store.data_dir
    state = await trio.to_thread.run_sync(load, data_dir)
    if state is None:
        raise UsageError(f"{data_dir} is a single node, not in a cluster")
    node = await trio.to_thread.run_sync(client.find_node, data_dir)
    if node is None:
        raise UsageError(
            f"node {state.node_number} ({state.name}) is not running: a running node "
            "moves the stripes away (start it with `objfs serve`)"
        )
    print(f"objfs: moving node {number}'s stripes to the other nodes...", flush=True)
    done = await trio.to_thread.run_sync(
        functools.partial(
            node.call, "POST", "/admin/cluster/remove", {"node": number}, timeout_s=None
        )
    )
    print(
        f"objfs: node {done['removed']} is removed from the cluster "
        f"({done['stripes_moved']} stripes moved)"
    )
    return 0


def render_cluster(cluster: dict[str, Any]) -> str:
    raft = cluster.get("raft") or {}
    lines = [
        f"cluster:    {cluster.get('cluster_id')}",
        f"this node:  {cluster.get('node_number')} ({cluster.get('name')}), "
        f"{raft.get('state', '?')}, term {raft.get('term')}, "
        f"applied {cluster.get('applied_index')} of commit {raft.get('commit_index')}"
        + ("" if cluster.get("caught_up") else ", catching up"),
        f"leader:     {raft.get('leader') or 'none'}"
        + ("" if raft.get("has_quorum") else " (no quorum)"),
    ]
    connected = raft.get("peers_connected") or {}
    match = raft.get("peers_match_index") or {}
    lines.append("members:")
    for node in (cluster.get("catalog") or {}).get("nodes", []):
        address = node["raft_address"]
        if address == raft.get("self"):
            link = "this node"
        else:
            link = "connected" if connected.get(address) else "unreachable"
            if raft.get("state") == "leader" and address in match:
                lag = (raft.get("commit_index") or 0) - match[address]
                link += f", {max(lag, 0)} entries behind"
        voting = "leaving" if node.get("leaving") else "voting" if node["admitted"] else "joining"
        devices = len(node.get("devices") or ())
        lines.append(
            f"  {node['number']:>3}  {node['name']:<16} {address:<22} {voting}, {link}, "
            f"{devices} devices"
        )
    placement = cluster.get("placement") or {}
    if placement:
        if not placement.get("active"):
            lines.append("stripes:    on this node's devices (placement starts once caught up)")
        else:
            lines.append(
                f"stripes:    {placement.get('policy')} over the nodes"
                + (
                    ""
                    if placement.get("policy_now") == placement.get("policy")
                    else f"; {placement.get('policy_now')} while some are unreachable"
                )
                + (
                    ""
                    if placement.get("survives_node_loss")
                    else "; WARNING: losing one node can lose data (too few nodes or devices)"
                )
            )
        lines.append(
            f"fragments:  {placement.get('fragments_sent', 0)} sent to other nodes, "
            f"{placement.get('pending_fragments', 0)} pending here, "
            f"{placement.get('reclaimed_fragments', 0)} reclaimed"
        )
    snapshots = cluster.get("snapshots") or {}
    if snapshots:
        log_entries = raft.get("log_entries")
        lines.append(
            f"log:        {log_entries if log_entries is not None else '?'} entries; snapshots: "
            + (
                f"last at index {snapshots.get('last_index')}, "
                if snapshots.get("last_index")
                else ""
            )
            + f"{snapshots.get('taken', 0)} taken, {snapshots.get('installed', 0)} installed"
        )
    if cluster.get("failure"):
        lines.append(f"FAILED:     {cluster['failure']}")
    return "\n".join(lines)
