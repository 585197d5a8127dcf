"""objfs.node — the composition root: one `trio.run`, the store, and the services over it.

`run_node` starts, in order and each with `nursery.start` so that "started"
means "serving":

1. the admin listener (/health answers 503 "store recovery" from here on),
2. store recovery (`open_store`: replays the WAL, starts the checkpointer and
   the scrubber) — before anything that serves data listens; on a cluster
   node, then the cluster member (objfs.cluster.member), after which the S3
   users are the catalog's (objfs.cluster.users),
3. the S3 listener,
4. the FUSE mount (when configured), which counts as up once it answers a stat,

then marks the node ready: /health/ready answers 200, `DATA_DIR/node.json`
says where the node listens (and its admin token), systemd gets `READY=1`.
The watchdog ping runs on the event loop from the first moment, so a wedged
loop stops the pings and systemd restarts the node.

SIGINT/SIGTERM (or `stop`): `STOPPING=1` and readiness off; the mount stores
what open files hold and unmounts; hypercorn stops accepting and gives in-flight
requests `node.graceful_timeout_ms` to finish; then the store drains its WAL and
writes a final checkpoint (shielded), and the admin listener closes last. Any
service failing, or ending on its own, stops the whole node with that error:
never a half-alive process.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import signal
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import serve
from hypercorn.trio import tcp_server as hypercorn_tcp_server

from objfs.admin import NodeState, create_admin_app, remove_runtime_file, write_runtime_file
from objfs.cluster.member import ClusterMember
from objfs.cluster.state import ClusterState
from objfs.cluster.state import load as load_cluster_state
from objfs.cluster.users import CatalogUsers
from objfs.config import NodeConfig
from objfs.errors import ConfigError, ObjfsError
from objfs.fuse.mount import check_mount_config, mount_answers, run_mount, stop_mount
from objfs.metrics import Metrics
from objfs.s3.app import create_app
from objfs.s3.users import ROOT, Users
from objfs.sdnotify import Notifier
from objfs.store import Store, erasure, open_store

log = logging.getLogger(__name__)
_USERS_POLL_S = 2.0
_STOP_MARGIN_S = 5.0  # beyond the graceful timeout, for the mount and the listeners to close


# hypercorn's trio worker reads sockets 64 KiB at a time: a 64 MiB PUT is then a
# thousand trips through h11, ASGI and the writer on the event loop. 1 MiB reads
# cut the loop's CPU per PUT by more than half (bench/README.md, bench_s3).
hypercorn_tcp_server.MAX_RECV = 1 << 20

SEND_TIMEOUT_S = 120.0  # a client that takes nothing of a response for this long is gone


class _Sends:
    """Deadlines for hypercorn's response writes of one listener.

    hypercorn sends every chunk in a shielded scope with no deadline: a client
    that stops reading holds its connection, its handler and the object's
    reader forever, and a stopping node waits for it past any graceful
    timeout. `_protocol_send` (patched over hypercorn's) gives each send
    SEND_TIMEOUT_S, and `stop_by` cuts the sends still waiting at the graceful
    deadline.
    """

    def __init__(self) -> None:
        self.deadline = math.inf  # no send outlives this (set when stopping)
        self.waiting: weakref.WeakSet[trio.CancelScope] = weakref.WeakSet()

    def stop_by(self, deadline: float) -> None:
        self.deadline = deadline
        for scope in list(self.waiting):
            scope.deadline = min(scope.deadline, deadline)


_hypercorn_protocol_send = hypercorn_tcp_server.TCPServer.protocol_send


async def _protocol_send(self: hypercorn_tcp_server.TCPServer, event: Event) -> None:
    sends = getattr(self.config, "objfs_sends", None)
    if not isinstance(event, RawData) or sends is None:
        await _hypercorn_protocol_send(self, event)
        return
    async with self.send_lock:
        deadline = min(trio.current_time() + SEND_TIMEOUT_S, sends.deadline)
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            sends.waiting.add(scope)
            try:
                await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
    if scope.cancelled_caught:  # the client stopped reading: drop the connection
        log.info(
            "a client took nothing for %.0f s (or the node is stopping): closed", SEND_TIMEOUT_S
        )
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
            await self.protocol.handle(Closed())


hypercorn_tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]


class ServiceFailed(ObjfsError):
    """A service of the node stopped on its own: the node stops with it."""


def hypercorn_config(config: NodeConfig, address: str | None = None) -> HypercornConfig:
    server = HypercornConfig()
    server.include_server_header = False  # the app says "objfs" itself
    server.bind = [config.s3.address if address is None else address]
    server.accesslog = None
    server.errorlog = logging.getLogger("objfs.s3.server")
    server.keep_alive_timeout = 75  # seconds; SDKs keep connections in a pool
    server.graceful_timeout = config.node.graceful_timeout_ms / 1000
    server.h11_max_incomplete_size = 64 * 1024  # request line and headers
    server.objfs_sends = _Sends()  # type: ignore[attr-defined]  # see _protocol_send
    return server


async def run_node(
    config: NodeConfig,
    *,
    stop: trio.Event | None = None,
    on_ready: Callable[[Store, list[str], Users], None] | None = None,
    freeze_index: bool = True,
    handle_signals: bool = True,
    notifier: Notifier | None = None,
) -> None:
    """Run the node until a signal (or `stop`); `on_ready(store, S3 addresses,
    users)` is called once every service is up.

    Raises:
        ObjfsError: a service could not start (port in use, bad mountpoint,
            devices missing...) or failed; the message names what.
    """
    erasure.tune_malloc()  # a no-op after the CLI's call; before any worker thread exists
    notifier = Notifier() if notifier is None else notifier
    cluster = await trio.to_thread.run_sync(load_cluster_state, config.store.data_dir)
    users, generated = await trio.to_thread.run_sync(Users.load, config.store.data_dir)
    if generated and cluster is None:
        _show_generated_root(users)
    stop = trio.Event() if stop is None else stop
    state = NodeState(config, users=users)
    # A cluster node's users are the catalog's (objfs.cluster.users); users.json is
    # only their cache there, which no one else writes, so nothing to watch.
    catalog_users = None if cluster is None else CatalogUsers(users, generated=generated)
    metrics = Metrics()
    try:
        async with trio.open_nursery() as helpers:
            # Held for the node's whole life: a second Ctrl-C while stopping must
            # not turn into a KeyboardInterrupt in the middle of the final checkpoint.
            if handle_signals:
                helpers.start_soon(_stop_on_signal, stop)
            if catalog_users is None:
                helpers.start_soon(_watch_users, users)
            if notifier.watchdog_interval_s is not None:
                helpers.start_soon(_watchdog, notifier, notifier.watchdog_interval_s)
            await _serve(
                state, cluster, catalog_users, metrics, stop, notifier, on_ready, freeze_index
            )
            helpers.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(remove_runtime_file, state)
        notifier.close()
    log.info("node stopped cleanly")


async def _serve(
    state: NodeState,
    cluster: ClusterState | None,
    catalog_users: CatalogUsers | None,
    metrics: Metrics,
    stop: trio.Event,
    notifier: Notifier,
    on_ready: Callable[[Store, list[str], Users], None] | None,
    freeze_index: bool,
) -> None:
    config = state.config
    if config.fuse.mountpoint:  # a bad mount is refused before anything starts
        await trio.to_thread.run_sync(check_mount_config, config.fuse)
    admin_stop = trio.Event()
    async with trio.open_nursery() as outer:
        if config.node.admin_address:
            app = create_admin_app(state, metrics)
            server = hypercorn_config(config, config.node.admin_address)
            server.errorlog = logging.getLogger("objfs.admin.server")
            server.graceful_timeout = 1.0  # probes and scrapes are short
            state.admin_addresses = await outer.start(
                _listen, "node.admin_address", app, server, admin_stop.wait
            )
        notifier.status("recovering the store")
        try:
            # A cluster node's index comes from the cluster's log: nothing local to
            # freeze or checkpoint, and its member starts the scrubber once caught up.
            async with open_store(
                config.store,
                freeze_index=freeze_index and cluster is None,
                background_jobs=cluster is None,
                replicated=cluster is not None,
            ) as store:
                state.store = store
                metrics.watch_store(store)
                try:
                    async with trio.open_nursery() as member_nursery:
                        if cluster is not None:
                            assert catalog_users is not None
                            notifier.status("joining the cluster")
                            member = ClusterMember(store, cluster, config.store.data_dir)
                            state.cluster = member
                            member.on_catalog_change = functools.partial(
                                catalog_users.catalog_changed, member.catalog
                            )
                            await member_nursery.start(member.run, _cluster_listener(config))
                            if await catalog_users.adopt(member):
                                _show_generated_root(catalog_users.users)
                            member_nursery.start_soon(catalog_users.keep_cache)
                        await _serve_faces(state, metrics, stop, notifier, on_ready)
                        member_nursery.cancel_scope.cancel()
                finally:
                    metrics.forget_store()
                    state.store = None
                notifier.status("final checkpoint")
        finally:
            admin_stop.set()


def _cluster_listener(config: NodeConfig) -> Callable[..., Awaitable[Any]]:
    """The internal API's listener, for ClusterMember.run to start in its nursery."""

    async def listen(
        app: Any,
        address: str,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        server = hypercorn_config(config, address)
        server.errorlog = logging.getLogger("objfs.cluster.server")
        server.graceful_timeout = 1.0
        await _listen(
            "cluster.json api_address", app, server, trio.sleep_forever, task_status=task_status
        )

    return listen


async def _serve_faces(
    state: NodeState,
    metrics: Metrics,
    stop: trio.Event,
    notifier: Notifier,
    on_ready: Callable[[Store, list[str], Users], None] | None,
) -> None:
    """S3 and the mount over the open store, until `stop`; then drain them."""
    config, store, users = state.config, state.store, state.users
    assert store is not None and users is not None
    async with trio.open_nursery() as faces:
        s3_server = hypercorn_config(config)
        if config.s3.address:
            app = create_app(store, config, users, metrics)
            state.s3_addresses = await faces.start(_listen, "s3.address", app, s3_server, stop.wait)
        if config.fuse.mountpoint:
            path = await faces.start(_mount, store, config, metrics, stop)
            if not await mount_answers(path):
                raise ServiceFailed(f"fuse.mountpoint: the mount at {path} does not answer")
            state.mountpoint = path
        state.ready = True
        await trio.to_thread.run_sync(write_runtime_file, state)
        notifier.ready(_describe(state))
        log.info("ready: %s", _describe(state))
        if on_ready is not None:
            on_ready(store, state.s3_addresses, users)
        await stop.wait()
        state.stopping = True
        notifier.stopping("stopping: draining requests, unmounting")
        log.info("stopping: draining requests, unmounting")
        if config.fuse.mountpoint:
            stop_mount()
        graceful_s = config.node.graceful_timeout_ms / 1000
        s3_server.objfs_sends.stop_by(trio.current_time() + graceful_s)  # type: ignore[attr-defined]
        faces.cancel_scope.deadline = trio.current_time() + graceful_s + _STOP_MARGIN_S


async def _listen(
    key: str,
    app: Any,
    server: HypercornConfig,
    shutdown: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's `serve`, with a bind failure named by its config key."""
    status = _Started(task_status)
    try:
        await serve(app, server, shutdown_trigger=shutdown, mode="asgi", task_status=status)
    except* OSError as group:  # hypercorn's nursery wraps it
        if status.done:
            raise
        exc = _first_leaf(group)
        address = server.bind[0]
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"{key}: {address} is in use by another process") from None
        raise ConfigError(f"{key}: cannot listen on {address}: {exc.strerror}") from None


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class _Started(trio.TaskStatus[list[str]]):
    """A task status that remembers whether `started` was called."""

    def __init__(self, inner: trio.TaskStatus[list[str]]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: list[str] | None = None) -> None:
        assert value is not None
        self.done = True
        self.inner.started(value)


async def _mount(
    store: Store,
    config: NodeConfig,
    metrics: Metrics,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run_mount(store, config.fuse, metrics=metrics, task_status=task_status)
    if not stop.is_set():  # unmounted from outside (fusermount -u): the node goes too
        raise ServiceFailed(f"the mount at {config.fuse.mountpoint} ended while the node ran")


def _describe(state: NodeState) -> str:
    parts = [f"S3 on {', '.join(state.s3_addresses)}" if state.s3_addresses else "no S3"]
    if state.mountpoint:
        parts.append(f"mounted at {state.mountpoint}")
    if state.admin_addresses:
        parts.append(f"admin on {', '.join(state.admin_addresses)}")
    return "; ".join(parts)


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """WATCHDOG=1 from the event loop: if the loop wedges, the pings stop."""
    while True:
        notifier.watchdog()
        await trio.sleep(interval_s)


def _show_generated_root(users: Users) -> None:
    root = users.get(ROOT)
    assert root is not None
    print(
        "objfs: generated the root user's keys (shown once; also in "
        f"{users.path}):\n  access key: {root.access_key}\n"
        f"  secret key: {root.secret_key}",
        flush=True,
    )


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
