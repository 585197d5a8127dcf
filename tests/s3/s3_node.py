"""A real node for S3 tests: a store on O_DIRECT device files, hypercorn on loopback.

The node runs `objfs.node.run_node` in its own thread with its own `trio.run`
(boto3 is synchronous), on a free port of 127.0.0.1. Tests talk to it with real
clients: boto3 here, other tools in their own modules.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import trio
from botocore.config import Config as BotoConfig

from objfs.config import FuseConfig, NodeConfig, NodeOptions, S3Config, StoreConfig
from objfs.node import run_node
from objfs.s3.users import Users
from objfs.store import Store
from objfs.store.format import create_data_dir

WORK_DIR = os.environ.get("OBJFS_TEST_DIR", "/var/tmp/objfs-tests")
ROOT_KEY, ROOT_SECRET = "ROOTKEY0123456789", "root-secret-0123456789abcdef"


@dataclass
class Node:
    """A running node: its endpoint, config and the store (for white-box checks)."""

    endpoint: str
    config: NodeConfig
    store: Store
    users: Users
    token: trio.lowlevel.TrioToken
    stop: trio.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def client(
        self, access_key: str = ROOT_KEY, secret_key: str = ROOT_SECRET, **config: Any
    ) -> Any:
        return boto3_client(self.endpoint, access_key, secret_key, **config)

    def create_user(self, name: str) -> Any:
        """A new user of the running node (its users file too), and a client for it."""
        user = self.call(self.users.create, name)
        return user, self.client(user.access_key, user.secret_key)

    def call(self, function: Any, *args: Any) -> Any:
        """Run `function(*args)` (sync, no awaits) on the node's event loop."""
        return trio.from_thread.run_sync(function, *args, trio_token=self.token)


def boto3_client(
    endpoint: str, access_key: str = ROOT_KEY, secret_key: str = ROOT_SECRET, **config: Any
) -> Any:
    """A boto3 S3 client for a test node: path-style, no retries (a failure shows)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def start_node(
    data_dir: str,
    *,
    device_count: int = 3,
    device_size_bytes: int = 256 << 20,
    s3: S3Config | None = None,
    fuse: FuseConfig | None = None,
) -> Node:
    """A node on fresh device files in `data_dir`; with `fuse`, also mounted (one
    mount per process: pyfuse3 is process-wide)."""
    os.environ["OBJFS_ROOT_ACCESS_KEY"] = ROOT_KEY
    os.environ["OBJFS_ROOT_SECRET_KEY"] = ROOT_SECRET
    trio.run(
        lambda: create_data_dir(
            data_dir, device_count=device_count, device_size_bytes=device_size_bytes
        )
    )
    config = NodeConfig(
        store=StoreConfig(data_dir=data_dir, scrub_rate_bytes_per_s=0),
        s3=s3 or S3Config(address="127.0.0.1:0"),
        fuse=fuse or FuseConfig(),
        node=NodeOptions(admin_address="127.0.0.1:0"),
    )
    return run_in_thread(config)


def run_in_thread(config: NodeConfig, *, timeout: float = 60) -> Node:
    """`objfs.node.run_node(config)` in a thread of this process, until ready."""
    ready = threading.Event()
    box: dict[str, Any] = {}
    errors: list[BaseException] = []

    async def main() -> None:
        box["token"] = trio.lowlevel.current_trio_token()
        box["stop"] = stop = trio.Event()

        def on_ready(store: Store, bound: list[str], users: Users) -> None:
            box["store"], box["bound"], box["users"] = store, bound, users
            ready.set()

        await run_node(
            config, stop=stop, on_ready=on_ready, freeze_index=False, handle_signals=False
        )

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported by the test that stops the node
            errors.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="objfs-node", daemon=True)
    thread.start()
    ready.wait(timeout)
    if errors:
        raise errors[0]
    return Node(
        endpoint=box["bound"][0],
        config=config,
        store=box["store"],
        users=box["users"],
        token=box["token"],
        stop=box["stop"],
        thread=thread,
        errors=errors,
    )


def stop_node(node: Node) -> None:
    trio.from_thread.run_sync(node.stop.set, trio_token=node.token)
    node.thread.join(60)
    assert not node.thread.is_alive(), "the node did not stop"
    if node.errors:
        raise node.errors[0]
