"""objfs.cluster.catalog — the cluster's own state, changed only through the Raft log.

The catalog is the list of nodes: number, name, addresses, whether each is a
voting Raft member yet, and each node's devices (global device indexes, which
placement spreads fragments over; objfs.cluster.placement); and the S3 users
with their keys (objfs.s3.users), which every node serves from. Buckets and
their settings are object-index records and travel as records.
Every node applies every change in log order with `apply`, a pure function of
the change and the catalog before it: no clock, no randomness, no I/O (a new
user's keys are made by the node that proposes it). A change that does not
fit raises an `ObjfsError` on every node alike and changes nothing.

Changes are JSON objects with an `op` naming their version, never reused:

    init_v1      {cluster_id, name, raft_address, api_address}   node 0, once
    add_node_v1  {name, raft_address, api_address}  -> the new node's number
    admitted_v1  {number}                            the node votes now
    leave_v1     {number}     the node is leaving: no new stripes on its devices,
                              and no record may name them for a new segment
    remove_node_v1 {number}   a leaving node is gone (its stripes were moved), or
                              one that joined and was never admitted
    devices_v1   {number, devices: [global device index, ...]}   a node's devices
    users_seed_v1 {users: [USER, ...]}   the first users, root among them; only
                                         into a catalog with none -> whether it did
    user_add_v1  USER                    a new user (the same again: a no-op)
    user_delete_v1 {name}                a user other than root

    USER = name, access_key, secret_key, canonical_id, display_name   (strings)

Users are refused alike on every node (InvalidArgument) for a malformed
field, an access key another user has, root added or deleted by these changes,
or a user change before the seed; a taken name is AlreadyExists, an unknown
one NotFound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, final

from objfs.errors import AlreadyExists, InvalidArgument, NotFound, ObjfsError
from objfs.s3.users import ROOT, User, user_from_fields
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
    leaving: bool = False  # `objfs cluster remove` is moving its stripes away

    def describe(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "raft_address": self.raft_address,
            "api_address": self.api_address,
            "admitted": self.admitted,
            "devices": list(self.devices),
            "leaving": self.leaving,
        }


@final
class Catalog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Every change applied, in order: a Raft snapshot keeps the catalog as
        # these (a few per node and per user), replayed by `restore`.
        self.history: list[dict[str, Any]] = []
        self.cluster_id: str | None = None
        self.nodes: dict[int, NodeEntry] = {}
        # Never reused: a removed node's device indexes may still be named by
        # records until its fragments are healed elsewhere.
        self.next_number = 1
        # Removed nodes, by number: their devices stay retired (no record may
        # name them for a new segment).
        self.removed: dict[int, NodeEntry] = {}
        self.users: dict[str, User] = {}  # by name; empty until seeded
        self.users_version = 0  # counts the changes to `users` (alike on every node)

    def user_list(self) -> list[User]:
        return sorted(self.users.values(), key=lambda user: user.name)

    def members(self) -> list[NodeEntry]:
        """The nodes that vote (Raft members), by number."""
        return [n for _, n in sorted(self.nodes.items()) if n.admitted]

    def devices(self) -> dict[int, tuple[int, ...]]:
        """Node number -> its devices, for the voting members that have told theirs
        and are not leaving: where new stripes go."""
        return {n.number: n.devices for n in self.members() if n.devices and not n.leaving}

    def retired_devices(self) -> set[int]:
        """Devices of nodes leaving or removed: a new segment must not use them."""
        leaving = {d for n in self.nodes.values() if n.leaving for d in n.devices}
        return leaving | {d for n in self.removed.values() for d in n.devices}

    def node(self, number: int) -> NodeEntry:
        try:
            return self.nodes[number]
        except KeyError:
            raise NotInCluster(f"no node number {number} in the cluster") from None

    def apply(self, change: dict[str, Any]) -> Any:
        """Apply one change; what it returns. A change that raises changes nothing."""
        result = self._apply(change)
        self.history.append(change)
        return result

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Become the catalog these changes made (a Raft snapshot's), in place."""
        self._reset()
        for change in history:
            self.apply(change)

    def _apply(self, change: dict[str, Any]) -> Any:
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
            if op == "leave_v1":
                return self._leave(int(change["number"]))
            if op == "remove_node_v1":
                number = int(change["number"])
                node = self.node(number)
                if node.admitted and not node.leaving:
                    raise InvalidArgument(f"node {number} is not leaving: it cannot be removed")
                self.removed[number] = self.nodes.pop(number)
                return number
            if op == "users_seed_v1":
                return self._seed_users(change["users"])
            if op == "user_add_v1":
                return self._add_user({k: v for k, v in change.items() if k != "op"})
            if op == "user_delete_v1":
                return self._delete_user(change["name"])
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

    def _leave(self, number: int) -> int:
        node = self.node(number)
        if node.leaving:
            return number  # asked again (a retried remove)
        if not node.admitted:
            raise InvalidArgument(f"node {number} has not been admitted: nothing to move off it")
        staying = [n for n in self.members() if n.number != number and not n.leaving]
        if not staying:
            raise InvalidArgument(f"node {number} is the cluster's last member: it cannot leave")
        self.nodes[number] = replace(node, leaving=True)
        return number

    def _seed_users(self, listed: Any) -> bool:
        if not isinstance(listed, list):
            raise InvalidArgument("users_seed_v1 needs a list of users")
        users = [user_from_fields(fields) for fields in listed]
        if len({u.name for u in users}) != len(users):
            raise InvalidArgument("users_seed_v1 names a user twice")
        if len({u.access_key for u in users}) != len(users):
            raise InvalidArgument("users_seed_v1 gives two users one access key")
        if ROOT not in {u.name for u in users}:
            raise InvalidArgument("users_seed_v1 has no root user")
        if self.users:
            return False  # seeded already (by another node's proposal): the first stays
        self.users = {u.name: u for u in users}
        self.users_version += 1
        return True

    def _add_user(self, fields: dict[str, Any]) -> str:
        user = user_from_fields(fields)
        if not self.users:
            raise InvalidArgument(
                "the cluster has no users yet: the first node adds its own when it first runs"
            )
        if user.name == ROOT:
            raise InvalidArgument("root is not added: it comes with the cluster's first users")
        existing = self.users.get(user.name)
        if existing == user:
            return user.name  # the same change again: nothing to do
        if existing is not None:
            raise AlreadyExists(f"user {user.name!r} exists")
        holder = next((u for u in self.users.values() if u.access_key == user.access_key), None)
        if holder is not None:
            raise InvalidArgument(f"access key {user.access_key!r} is taken")
        self.users[user.name] = user
        self.users_version += 1
        return user.name

    def _delete_user(self, name: Any) -> str:
        if not isinstance(name, str):
            raise InvalidArgument("user_delete_v1 needs a user name")
        if name == ROOT:
            raise InvalidArgument("root cannot be deleted")
        if name not in self.users:
            raise NotFound(f"no user {name!r}")
        del self.users[name]
        self.users_version += 1
        return name

    def describe(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "nodes": [n.describe() for _, n in sorted(self.nodes.items())],
        }
