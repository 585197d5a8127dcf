"""objfs.cluster.catalog — the cluster's own state, changed only through the Raft log.

The catalog is the list of nodes: number, name, addresses, whether each is a
voting Raft member yet, and each node's devices (global device indexes, which
placement spreads fragments over; objfs.cluster.placement). Buckets and their
settings are object-index records and travel as records; users and keys join
the catalog later.
Every node applies every change in log order with `apply`, a pure function of
the change and the catalog before it: no clock, no randomness, no I/O. A
change that does not fit raises an `ObjfsError` on every node alike and
changes nothing.

Changes are JSON objects with an `op` naming their version, never reused:

    init_v1      {cluster_id, name, raft_address, api_address}   node 0, once
    add_node_v1  {name, raft_address, api_address}  -> the new node's number
    admitted_v1  {number}                            the node votes now
    remove_node_v1 {number}
    devices_v1   {number, devices: [global device index, ...]}   a node's devices
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, final

from objfs.errors import InvalidArgument, ObjfsError
from objfs.store.types import MAX_NODE_NUMBER, device_node_number


class NotInCluster(ObjfsError):
    """A change names a node the catalog does not have."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    number: int
    name: str
    raft_address: str
    api_address: str
    admitted: bool
    devices: tuple[int, ...] = ()  # global device indexes, ascending

    def describe(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "raft_address": self.raft_address,
            "api_address": self.api_address,
            "admitted": self.admitted,
            "devices": list(self.devices),
        }


@final
class Catalog:
    def __init__(self) -> None:
        self.cluster_id: str | None = None
        self.nodes: dict[int, NodeEntry] = {}
        # Never reused: a removed node's device indexes may still be named by
        # records until its fragments are healed elsewhere.
        self.next_number = 1

    def members(self) -> list[NodeEntry]:
        """The nodes that vote (Raft members), by number."""
        return [n for _, n in sorted(self.nodes.items()) if n.admitted]

    def devices(self) -> dict[int, tuple[int, ...]]:
        """Node number -> its devices, for the voting members that have told theirs."""
        return {n.number: n.devices for n in self.members() if n.devices}

    def node(self, number: int) -> NodeEntry:
        try:
            return self.nodes[number]
        except KeyError:
            raise NotInCluster(f"no node number {number} in the cluster") from None

    def apply(self, change: dict[str, Any]) -> Any:
        op = change.get("op")
        try:
            if op == "init_v1":
                if self.cluster_id is not None:
                    raise InvalidArgument("the cluster is already initialised")
                self.cluster_id = str(change["cluster_id"])
                self.nodes[0] = NodeEntry(
                    0,
                    str(change["name"]),
                    str(change["raft_address"]),
                    str(change["api_address"]),
                    True,
                )
                return 0
            if op == "add_node_v1":
                return self._add(
                    str(change["name"]), str(change["raft_address"]), str(change["api_address"])
                )
            if op == "admitted_v1":
                number = int(change["number"])
                self.nodes[number] = replace(self.node(number), admitted=True)
                return number
            if op == "devices_v1":
                number = int(change["number"])
                devices = tuple(sorted({int(i) for i in change["devices"]}))
                if any(device_node_number(i) != number for i in devices):
                    raise InvalidArgument(f"devices {devices} are not all node {number}'s")
                self.nodes[number] = replace(self.node(number), devices=devices)
                return number
            if op == "remove_node_v1":
                number = int(change["number"])
                self.node(number)
                del self.nodes[number]
                return number
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"a malformed catalog change {change!r}: {exc!r}") from None
        raise InvalidArgument(f"an unknown catalog change {op!r}")

    def _add(self, name: str, raft_address: str, api_address: str) -> int:
        for entry in self.nodes.values():
            if entry.raft_address == raft_address or entry.name == name:
                if (entry.name, entry.raft_address, entry.api_address) == (
                    name,
                    raft_address,
                    api_address,
                ):
                    return entry.number  # the same join again (a retry): the same number
                raise InvalidArgument(
                    f"node {entry.number} ({entry.name}, {entry.raft_address}) already has that "
                    "name or Raft address"
                )
        if self.cluster_id is None:
            raise InvalidArgument("the cluster is not initialised")
        number = self.next_number
        if number > MAX_NODE_NUMBER:
            raise InvalidArgument(
                f"the cluster has numbered {MAX_NODE_NUMBER + 1} nodes, the most it can"
            )
        self.next_number += 1
        self.nodes[number] = NodeEntry(number, name, raft_address, api_address, False)
        return number

    def describe(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "nodes": [n.describe() for _, n in sorted(self.nodes.items())],
        }
