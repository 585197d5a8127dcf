"""objfs.cluster.state — `DATA_DIR/cluster.json`: what a node needs to find its cluster.

Written by `objfs cluster init` and `objfs cluster join`, read by `objfs
serve`; a data directory without it is a single node. It holds the cluster
secret (mode 0600, replaced atomically) and this node's identity and
addresses. Membership itself lives in the Raft log; `peers` is the last
member list this node knew, which it needs to find the others at start.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, replace

from objfs.errors import ConfigError
from objfs.store.device import read_small_file, write_file_atomically
from objfs.store.types import MAX_NODE_NUMBER

STATE_FILE = "cluster.json"
JOURNAL_FILE = "raft.objfs-journal"
SNAPSHOT_FILE = "raft-snapshot"
MIN_SECRET_CHARS = 16


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster_id: str
    node_number: int  # device indexes of this node are node_number * 256 + local
    name: str
    raft_address: str  # host:port of this node's Raft member
    api_address: str  # host:port of this node's internal API (join, fragments)
    secret: str
    peers: tuple[str, ...] = ()  # the other members' Raft addresses, last known
    peer_apis: tuple[str, ...] = ()  # the others' internal API addresses, last known
    admitted: bool = False  # a Raft voting member yet (the first node is from the start)

    def with_peers(self, peers: list[str], apis: list[str]) -> ClusterState:
        return replace(
            self,
            peers=tuple(sorted(p for p in peers if p != self.raft_address)),
            peer_apis=tuple(sorted(a for a in apis if a != self.api_address)),
        )


def state_path(data_dir: str) -> str:
    return os.path.join(data_dir, STATE_FILE)


def journal_path(data_dir: str) -> str:
    return os.path.join(data_dir, JOURNAL_FILE)


def snapshot_path(data_dir: str) -> str:
    """The Raft snapshot: the index, catalog and tags at one log index (objfs.cluster.snapshot)."""
    return os.path.join(data_dir, SNAPSHOT_FILE)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_secret(secret: str, where: str) -> str:
    """Raises ConfigError naming `where`: too short to resist guessing."""
    secret = secret.strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{where}: the cluster secret must have at least {MIN_SECRET_CHARS} characters"
        )
    return secret


def load(data_dir: str) -> ClusterState | None:
    """This node's cluster state, or None for a single node. Blocking.

    Raises:
        ConfigError: the file exists but is not a cluster state (named).
    """
    path = state_path(data_dir)
    raw = read_small_file(path)
    if raw is None:
        return None
    try:
        fields = json.loads(raw)
        state = ClusterState(
            cluster_id=str(fields["cluster_id"]),
            node_number=int(fields["node_number"]),
            name=str(fields["name"]),
            raft_address=str(fields["raft_address"]),
            api_address=str(fields["api_address"]),
            secret=str(fields["secret"]),
            peers=tuple(str(p) for p in fields.get("peers", [])),
            peer_apis=tuple(str(p) for p in fields.get("peer_apis", [])),
            admitted=bool(fields.get("admitted", False)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an objfs cluster state ({exc!r})") from exc
    if not 0 <= state.node_number <= MAX_NODE_NUMBER:
        raise ConfigError(f"{path}: node_number {state.node_number} is out of range")
    check_secret(state.secret, path)
    return state


def save(data_dir: str, state: ClusterState) -> None:
    """Replace the file atomically (mode 0600: it holds the secret). Blocking."""
    fields = asdict(state)
    fields["peers"] = list(state.peers)
    fields["peer_apis"] = list(state.peer_apis)
    body = json.dumps(fields, indent=2, sort_keys=True) + "\n"
    write_file_atomically(state_path(data_dir), body.encode(), mode=0o600)
