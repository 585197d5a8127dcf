"""objfs.node — the composition root: one `trio.run`, the store, and the faces over it.

`run_node` recovers the store before anything listens, then serves S3 with
hypercorn and (when configured) the FUSE mount in the same nursery, and stops
on SIGINT/SIGTERM (or when `stop` is set): the mount stores what open files
hold and unmounts, hypercorn drains and closes, then the store drains its WAL
and writes a final checkpoint. A failure of either stops the node with the error.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.trio import tcp_server as hypercorn_tcp_server

from objfs.config import NodeConfig
from objfs.errors import ObjfsError
from objfs.fuse.mount import check_mount_config, run_mount, stop_mount
from objfs.s3.app import create_app
from objfs.s3.users import Users
from objfs.store import Store, erasure, open_store

log = logging.getLogger(__name__)
_USERS_POLL_S = 2.0


# hypercorn's trio worker reads sockets 64 KiB at a time: a 64 MiB PUT is then a
# thousand trips through h11, ASGI and the writer on the event loop. 1 MiB reads
# cut the loop's CPU per PUT by more than half (bench/README.md, bench_s3).
hypercorn_tcp_server.MAX_RECV = 1 << 20


def hypercorn_config(config: NodeConfig) -> HypercornConfig:
    server = HypercornConfig()
    server.include_server_header = False  # the app says "objfs" itself
    server.bind = [config.s3.address]
    server.accesslog = None
    server.errorlog = logging.getLogger("objfs.s3.server")
    server.keep_alive_timeout = 75  # seconds; SDKs keep connections in a pool
    server.graceful_timeout = 30
    server.h11_max_incomplete_size = 64 * 1024  # request line and headers
    return server


async def run_node(
    config: NodeConfig,
    *,
    stop: trio.Event | None = None,
    on_ready: Callable[[Store, list[str], Users], None] | None = None,
    freeze_index: bool = True,
    handle_signals: bool = True,
) -> None:
    """Run the node until a signal (or `stop`); `on_ready(store, bound addresses,
    users)` is called once S3 listens."""
    erasure.tune_malloc()  # a no-op after the CLI's call; before any worker thread exists
    users, generated = await trio.to_thread.run_sync(Users.load, config.store.data_dir)
    if generated:
        root = users.get("root")
        assert root is not None
        print(
            "objfs: generated the root user's keys (shown once; also in "
            f"{users.path}):\n  access key: {root.access_key}\n"
            f"  secret key: {root.secret_key}",
            flush=True,
        )
    stop = trio.Event() if stop is None else stop
    async with trio.open_nursery() as signals:
        if handle_signals:
            # Held for the node's whole life: a second Ctrl-C while stopping must
            # not turn into a KeyboardInterrupt in the middle of the final checkpoint.
            signals.start_soon(_stop_on_signal, stop)
        signals.start_soon(_watch_users, users)
        await _serve(config, users, stop, on_ready, freeze_index)
        signals.cancel_scope.cancel()
    log.info("node stopped cleanly")


async def _serve(
    config: NodeConfig,
    users: Users,
    stop: trio.Event,
    on_ready: Callable[[Store, list[str], Users], None] | None,
    freeze_index: bool,
) -> None:
    """The store, then S3 over it, until `stop`; hypercorn drains, then the store closes."""
    if config.fuse.mountpoint:  # a bad mount is refused before anything starts
        await trio.to_thread.run_sync(check_mount_config, config.fuse)
    async with (
        open_store(config.store, freeze_index=freeze_index) as store,
        trio.open_nursery() as nursery,
    ):
        bound: list[str] = []
        if config.s3.address:
            app = create_app(store, config, users)
            bound = await nursery.start(
                partial(
                    serve,
                    app,
                    hypercorn_config(config),
                    shutdown_trigger=stop.wait,
                    mode="asgi",
                )
            )
        if config.fuse.mountpoint:
            await nursery.start(partial(run_mount, store, config.fuse))
        if on_ready is not None:
            on_ready(store, bound, users)
        await stop.wait()
        if config.fuse.mountpoint:
            stop_mount()
        nursery.cancel_scope.deadline = trio.current_time() + 35  # graceful, bounded


async def _watch_users(users: Users) -> None:
    """Pick up users added or removed by `objfs user` while the node runs."""
    while True:
        await trio.sleep(_USERS_POLL_S)
        try:
            if await trio.to_thread.run_sync(users.reload_if_changed):
                log.info("users reloaded from %s", users.path)
        except ObjfsError as exc:
            log.error("%s; keeping the users loaded before", exc)


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("signal %d: already stopping", signum)
            stop.set()
