"""objfs.cli — the `objfs` command: argparse subcommands over the core.

Parses arguments, loads the config, runs one trio task, prints. A user mistake
(`ObjfsError`) prints one line to stderr and exits non-zero; a bug still shows
its traceback. Long-running services (S3, FUSE) land in `objfs.node`.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from urllib.parse import quote

import trio

from objfs import __version__, client
from objfs.cluster.commands import (
    DEFAULT_API_ADDRESS,
    DEFAULT_RAFT_ADDRESS,
    SECRET_VARIABLE,
    NodeOptions,
    cluster_init,
    cluster_join,
    cluster_remove,
    cluster_status,
)
from objfs.cluster.state import ClusterState
from objfs.cluster.state import load as load_cluster_state
from objfs.config import NodeConfig, default_config_path, load_config
from objfs.errors import ConfigError, DeviceError, ObjfsError, UsageError
from objfs.fuse.mount import check_mount_settings
from objfs.logs import setup_logging
from objfs.node import run_node
from objfs.s3.users import Users
from objfs.store import Store, erasure, open_store
from objfs.store.device import check_durable_filesystem, open_devices
from objfs.store.format import (
    DEFAULT_DEVICE_COUNT,
    check_node_number,
    create_data_dir,
    format_devices,
    replace_device,
)
from objfs.store.fsck import run_fsck
from objfs.store.types import GiB, MiB, device_node_number

EXIT_USAGE = 2
EXIT_PROBLEMS = 1


def _size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes."""
    units = {"K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 2G") from None


def _parser() -> argparse.ArgumentParser:
    # The common options work before or after the command (`objfs --data D serve`
    # and `objfs serve --data D`). SUPPRESS keeps a subcommand from resetting what
    # was given before it; each parser gets its own copies of the actions, because
    # set_defaults on one would change the default of shared ones.
    def common() -> argparse.ArgumentParser:
        options = argparse.ArgumentParser(add_help=False)
        options.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
        options.add_argument(
            "--data", default=argparse.SUPPRESS, help="data directory (default ./objfs-data)"
        )
        options.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at DEBUG"
        )
        options.add_argument(
            "--log-format",
            choices=["text", "json"],
            default=argparse.SUPPRESS,
            help="one line per event, as text or JSON (node.log_format)",
        )
        return options

    parser = argparse.ArgumentParser(
        prog="objfs", description=__doc__.splitlines()[0], parents=[common()]
    )
    parser.set_defaults(config=None, data=None, verbose=False, log_format=None)
    parser.add_argument("--version", action="version", version=f"objfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common()])

    fmt = command("format", "format devices (or create the data directory)")
    fmt.add_argument("devices", nargs="*", help="device paths; none: files in the data directory")
    fmt.add_argument("--device-count", type=int, default=DEFAULT_DEVICE_COUNT)
    fmt.add_argument("--device-size", type=_size, help="size of each device file, e.g. 2G")
    fmt.add_argument("--wal-size", type=_size, help="WAL region size per device, e.g. 64M")
    fmt.add_argument("--force", action="store_true", help="erase devices that hold objfs data")
    fmt.add_argument(
        "--node-number",
        type=int,
        default=0,
        metavar="N",
        help="the node's number in a cluster; `objfs cluster join` sets it (default 0)",
    )

    serve = command("serve", "run the node (formats the data directory first)")
    serve.add_argument("--once", action="store_true", help="open, print status, and exit")
    serve.add_argument("--mount", metavar="PATH", help="also mount the buckets at PATH (FUSE)")
    serve.add_argument("--bucket", metavar="NAME", help="with --mount: mount this bucket only")
    serve.add_argument("--s3-address", metavar="HOST:PORT", help="S3 listener (s3.address)")
    serve.add_argument(
        "--admin-address", metavar="HOST:PORT", help="metrics/health/admin (node.admin_address)"
    )

    command("status", "the running node's state (or, when it is stopped, the store's)")

    bucket = command("bucket", "manage buckets (through the running node, else the store)")
    bucket_commands = bucket.add_subparsers(dest="bucket_command", required=True, metavar="ACTION")
    make = bucket_commands.add_parser("create", help="create a bucket", parents=[common()])
    make.add_argument("name")
    make.add_argument("--owner", default="root", help="the owning S3 user (default root)")
    bucket_commands.add_parser("list", help="list buckets", parents=[common()])
    remove = bucket_commands.add_parser("delete", help="delete an empty bucket", parents=[common()])
    remove.add_argument("name")

    config = command("config", "check a configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser(
        "check",
        help="parse and validate the config (file, OBJFS_* variables, flags); print it",
        parents=[common()],
    )

    user = command("user", "manage the S3 users of this node")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_commands.add_parser(
        "create", help="add a user (prints its keys)", parents=[common()]
    )
    create.add_argument("name")
    create.add_argument("--access-key", help="default: generated")
    create.add_argument("--secret-key", help="default: generated")
    user_commands.add_parser("list", help="list users and their access keys", parents=[common()])
    delete = user_commands.add_parser("delete", help="remove a user", parents=[common()])
    delete.add_argument("name")

    scrub = command("scrub", "read every fragment back and heal what is damaged or owed")
    scrub.add_argument("--rate", type=_size, default=0, help="bytes per second, e.g. 200M")
    scrub.add_argument("--no-repair", action="store_true", help="only report")

    device = command("device", "manage a node's devices")
    device_commands = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    replace = device_commands.add_parser(
        "replace",
        help="adopt a new device in place of a missing one, then heal onto it",
        description="adopt a new device in place of a missing one, then heal onto it",
        parents=[common()],
    )
    replace.add_argument(
        "index", type=int, help="the missing device's index, as `objfs status` shows it"
    )
    replace.add_argument(
        "path", nargs="?", help="the new device; default: data directory's devices/devINDEX.img"
    )
    replace.add_argument("--force", action="store_true", help="even if it holds objfs data")

    cluster = command("cluster", "form and inspect a cluster of nodes (docs/cluster.md)")
    cluster_commands = cluster.add_subparsers(
        dest="cluster_command", required=True, metavar="ACTION"
    )
    init = cluster_commands.add_parser(
        "init", help="make this data directory the first node of a new cluster", parents=[common()]
    )
    join = cluster_commands.add_parser(
        "join", help="join the cluster a running node belongs to", parents=[common()]
    )
    join.add_argument("address", metavar="ADDRESS", help="a member's internal API, HOST:PORT")
    for each in (init, join):
        each.add_argument("--name", help="this node's name (default: the host name)")
        each.add_argument(
            "--raft-address", default=DEFAULT_RAFT_ADDRESS, metavar="HOST:PORT", help="Raft port"
        )
        each.add_argument(
            "--api-address",
            default=DEFAULT_API_ADDRESS,
            metavar="HOST:PORT",
            help="internal API port (joins, fragments)",
        )
        each.add_argument(
            "--secret-file", help=f"the cluster secret (default: ${SECRET_VARIABLE}; init: new)"
        )
        each.add_argument("--device-count", type=int, default=DEFAULT_DEVICE_COUNT)
        each.add_argument("--device-size", type=_size, help="size of each device file, e.g. 2G")
    state = cluster_commands.add_parser(
        "status", help="leader, members, their health and lag", parents=[common()]
    )
    state.add_argument("--json", action="store_true", help="as JSON")
    remove = cluster_commands.add_parser(
        "remove",
        help="move a node's stripes to the other nodes, then take it out of the cluster",
        parents=[common()],
    )
    remove.add_argument("node", metavar="NODE", type=int, help="the node's number")

    fsck = command("fsck", "check every invariant of a stopped store")
    fsck.add_argument("--verify-data", action="store_true", help="read and checksum every byte")
    fsck.add_argument("--repair", action="store_true", help="fix what can be fixed safely")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    # A wedged node killed by systemd's watchdog (SIGABRT) dumps every thread's
    # stack to the journal on its way out.
    faulthandler.enable()
    args = _parser().parse_args(argv)
    try:
        config = load_config(
            args.config if args.config is not None else default_config_path(),
            environ=os.environ,
            overrides=_flag_overrides(args),
        )
        setup_logging(config.node.log_level, config.node.log_format)
        # Before trio.run: it looks libc up (ldconfig), which must not block the
        # loop, and the arena cap must precede every worker thread.
        erasure.tune_malloc()
        code = trio.run(_run, args, config)
    except ObjfsError as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except BaseExceptionGroup as group:  # a service of the node failed in its nursery
        errors = _leaves(group)
        if not all(isinstance(error, ObjfsError) for error in errors):
            raise
        for error in errors:
            print(f"objfs: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `objfs ... | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_PROBLEMS)
    sys.exit(code)


def _flag_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Flags over the file and the environment, as "section.key" -> value."""
    flags = {
        "store.data_dir": args.data,
        "node.log_format": args.log_format,
        "node.log_level": "debug" if args.verbose else None,
        "fuse.mountpoint": getattr(args, "mount", None),
        "fuse.bucket": getattr(args, "bucket", None),
        "s3.address": getattr(args, "s3_address", None),
        "node.admin_address": getattr(args, "admin_address", None),
    }
    return {key: value for key, value in flags.items() if value is not None}


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves


# Commands that open the store's devices themselves. On a cluster node the
# index lives in the cluster's log, not on the devices: these would see an empty
# store, and a write would bypass the log.
_OFFLINE_STORE_COMMANDS = {"fsck"}  # scrub and device replace say what they do instead


async def _refuse_offline_in_cluster(config: NodeConfig, what: str) -> None:
    state = await trio.to_thread.run_sync(load_cluster_state, config.store.data_dir)
    if state is not None:
        raise UsageError(
            f"{what}: {config.store.data_dir} is node {state.node_number} of cluster "
            f"{state.cluster_id}, whose index lives in the cluster's log; run the node "
            "(objfs serve) and use `objfs status` / `objfs bucket` / `objfs cluster status`"
        )


async def _run(args: argparse.Namespace, config: NodeConfig) -> int:
    if args.command in _OFFLINE_STORE_COMMANDS:
        await _refuse_offline_in_cluster(config, f"objfs {args.command}")
    if args.command == "format":
        return await _format(args, config)
    if args.command == "serve":
        return await _serve(args, config)
    if args.command == "status":
        return await _status(config)
    if args.command == "bucket":
        return await _bucket(args, config)
    if args.command == "config":
        return await _config_check(args, config)
    if args.command == "user":
        return await _user(args, config)
    if args.command == "scrub":
        return await _scrub(args, config)
    if args.command == "device":
        return await _device_replace(args, config)
    if args.command == "cluster":
        return await _cluster(args, config)
    if args.command == "fsck":
        report = await run_fsck(
            config.store,
            verify_data=args.verify_data,
            repair=args.repair,
            progress=_ProgressBar("fsck: verify data"),
        )
        print(report.render())
        return 0 if report.clean else EXIT_PROBLEMS
    raise UsageError(f"unknown command {args.command}")


async def _cluster(args: argparse.Namespace, config: NodeConfig) -> int:
    if args.cluster_command == "status":
        return await cluster_status(config, as_json=args.json)
    if args.cluster_command == "remove":
        return await cluster_remove(config, args.node)
    options = NodeOptions(
        name=args.name,
        raft_address=args.raft_address,
        api_address=args.api_address,
        secret_file=args.secret_file,
        device_count=args.device_count,
        device_size_bytes=args.device_size,
    )
    if args.cluster_command == "init":
        return await cluster_init(config, options)
    return await cluster_join(config, args.address, options)


async def _format(args: argparse.Namespace, config: NodeConfig) -> int:
    check_node_number(args.node_number)
    if args.devices:
        devices = await open_devices(args.devices, buffered=config.store.buffered_io)
        try:
            superblocks = await format_devices(
                devices,
                node_number=args.node_number,
                wal_size_bytes=args.wal_size,
                force=args.force,
            )
        finally:
            for device in devices:
                await device.aclose()
    else:
        if config.store.device_paths():
            raise UsageError(
                f"{config.store.data_dir} already has devices; remove it to start afresh"
            )
        superblocks = await create_data_dir(
            config.store.data_dir,
            device_count=args.device_count,
            device_size_bytes=args.device_size,
            buffered=config.store.buffered_io,
            wal_size_bytes=args.wal_size,
            node_number=args.node_number,
            progress=_ProgressBar("format", "device files"),
        )
    print(f"formatted {len(superblocks)} device(s) as node {superblocks[0].node_id}")
    if args.node_number:
        first, last = superblocks[0].device_index, superblocks[-1].device_index
        print(f"node number {args.node_number}: device indexes {first}..{last}")
    return 0


def _print_status(store: Store) -> None:
    stats = store.statistics()
    print(f"devices:    {', '.join(stats.devices)}")
    print(f"buckets:    {stats.buckets}")
    print(f"objects:    {stats.objects} ({stats.versions} versions, {stats.logical_bytes} bytes)")
    print(f"space:      {stats.free_bytes} of {stats.device_bytes} bytes free")
    print(f"wal:        {stats.wal_bytes_used} of {stats.wal_bytes_total} bytes in use")
    print(f"lsn:        {stats.last_lsn} (checkpoint at {stats.checkpoint_lsn})")
    print(f"replayed:   {store.replayed_records} WAL records at open")
    health = store.health.statistics()
    print(f"erasure:    {store.policy.describe()} over {health.device_count} devices")
    first, last = health.device_indexes[0], health.device_indexes[-1]
    if first:  # a cluster's node other than the first: its indexes do not start at 0
        print(f"indexes:    devices {first}..{last} (node number {device_node_number(first)})")
    state = "DEGRADED" if health.degraded else "healthy"
    print(
        f"health:     {state}; down {list(health.down_devices)}, owed "
        f"{list(health.owed_devices)}, bad fragments seen {health.bad_fragments}",
        flush=True,
    )


class _ProgressBar:
    """A bar on a terminal, a line per tenth otherwise."""

    def __init__(self, label: str, unit: str = "segments") -> None:
        self.label = label
        self.unit = unit
        self.tty = sys.stdout.isatty()
        self._last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if self.tty:
            filled = int(fraction * 40)
            bar = "#" * filled + "." * (40 - filled)
            print(f"\r{self.label} [{bar}] {done}/{total}", end="", flush=True)
            if done == total:
                print()
        elif int(fraction * 10) != self._last_tenth:
            self._last_tenth = int(fraction * 10)
            print(f"{self.label}: {done}/{total} {self.unit}", flush=True)


async def _scrub(args: argparse.Namespace, config: NodeConfig) -> int:
    node = await trio.to_thread.run_sync(client.find_node, config.store.data_dir)
    if node is not None:  # the running node scrubs (a cluster node: its own fragments)
        print(f"objfs: the node at {node.address} is scrubbing...", flush=True)
        body = {"repair": not args.no_repair, "rate": args.rate}
        done = await trio.to_thread.run_sync(
            functools.partial(node.call, "POST", "/admin/scrub", body, timeout_s=None)
        )
        print(done["report"])
        return 0 if done["clean"] else EXIT_PROBLEMS
    await _refuse_offline_in_cluster(config, "objfs scrub on a stopped node")
    async with open_store(config.store, background_jobs=False) as store:
        store.scrubber.rate_bytes_per_s = args.rate
        report = await store.scrubber.scrub(
            repair=not args.no_repair, progress=_ProgressBar("scrub")
        )
        print(report.render())
    return 0 if report.clean else EXIT_PROBLEMS


async def _device_replace(args: argparse.Namespace, config: NodeConfig) -> int:
    store_config = config.store
    path, created = await replace_device(store_config, args.index, args.path, force=args.force)
    if created:
        print(f"objfs: created {path} ({created} bytes)")
    cluster = await trio.to_thread.run_sync(load_cluster_state, store_config.data_dir)
    if cluster is not None:  # the index is the cluster's log: the running node heals
        print(
            f"objfs: {path} is device {args.index} now; node {cluster.node_number} heals "
            "onto it from its other devices and the other nodes once it runs and has "
            "caught up with the cluster (objfs serve; `objfs status` shows it owed until then)"
        )
        return 0
    print(f"objfs: {path} is device {args.index} now; healing onto it")
    async with open_store(store_config, background_jobs=False) as store:
        store.scrubber.rate_bytes_per_s = 0  # the operator is waiting: full speed
        report = await store.scrubber.scrub(
            devices={args.index}, progress=_ProgressBar(f"heal device {args.index}")
        )
        print(report.render())
    return 0 if report.clean else EXIT_PROBLEMS


async def _user(args: argparse.Namespace, config: NodeConfig) -> int:
    state = await trio.to_thread.run_sync(load_cluster_state, config.store.data_dir)
    if state is not None:
        return await _cluster_user(args, config, state)
    users, generated = await trio.to_thread.run_sync(Users.load, config.store.data_dir)
    if generated:
        root = users.get("root")
        assert root is not None
        print(f"objfs: generated root: access key {root.access_key} secret key {root.secret_key}")
    if args.user_command == "create":
        made = await trio.to_thread.run_sync(
            users.create, args.name, args.access_key, args.secret_key
        )
        print(f"user {made.name}\n  access key: {made.access_key}\n  secret key: {made.secret_key}")
        print(f"  canonical id: {made.canonical_id}")
    elif args.user_command == "list":
        for each in users.all():
            print(f"{each.name}\t{each.access_key}\t{each.canonical_id}")
    else:
        await trio.to_thread.run_sync(users.delete, args.name)
        print(f"user {args.name} deleted")
    return 0


async def _cluster_user(args: argparse.Namespace, config: NodeConfig, state: ClusterState) -> int:
    """A cluster node's users live in the cluster's catalog: changed through the
    running node (which proposes the change through Raft); listed from it, or
    from its cache (DATA/users.json) while it is stopped."""
    data_dir = config.store.data_dir
    node = await trio.to_thread.run_sync(client.find_node, data_dir)
    if node is None:
        if args.user_command != "list":
            raise UsageError(
                f"objfs user {args.user_command}: {data_dir} is node {state.node_number} of "
                f"cluster {state.cluster_id}, whose users live in the cluster's catalog; "
                "start the node (objfs serve) and run this again, here or on any other node"
            )
        cached = await trio.to_thread.run_sync(Users.read, data_dir)
        if not cached.all():
            raise UsageError(
                f"{cached.path}: no users cached yet; start the node (objfs serve) once"
            )
        print(
            f"objfs: node {state.node_number} is not running; its last copy of the "
            "cluster's users:",
            file=sys.stderr,
        )
        listed = [(u.name, u.access_key, u.canonical_id) for u in cached.all()]
    elif args.user_command == "create":
        body = {"name": args.name, "access_key": args.access_key, "secret_key": args.secret_key}
        made = await trio.to_thread.run_sync(node.call, "POST", "/admin/users", body)
        print(
            f"user {made['name']}\n  access key: {made['access_key']}\n"
            f"  secret key: {made['secret_key']}"
        )
        print(f"  canonical id: {made['canonical_id']}")
        return 0
    elif args.user_command == "delete":
        path = f"/admin/users/{quote(args.name, safe='')}"
        await trio.to_thread.run_sync(node.call, "DELETE", path)
        print(f"user {args.name} deleted")
        return 0
    else:
        answered = await trio.to_thread.run_sync(node.call, "GET", "/admin/users")
        listed = [(u["name"], u["access_key"], u["canonical_id"]) for u in answered]
    for name, access_key, canonical_id in listed:
        print(f"{name}\t{access_key}\t{canonical_id}")
    return 0


async def _status(config: NodeConfig) -> int:
    node = await trio.to_thread.run_sync(client.find_node, config.store.data_dir)
    if node is not None:
        status = await trio.to_thread.run_sync(node.call, "GET", "/admin/status")
        print(client.render_status(status), flush=True)
        return 0
    state = await trio.to_thread.run_sync(load_cluster_state, config.store.data_dir)
    if state is not None:  # the devices alone do not hold a cluster node's index
        print(
            f"node:       not running on {config.store.data_dir}; node {state.node_number} "
            f"({state.name}) of cluster {state.cluster_id}"
        )
        return 0
    async with open_store(config.store, background_jobs=False) as store:
        print(f"node:       not running on {config.store.data_dir}; read from the devices")
        _print_status(store)
    return 0


async def _bucket(args: argparse.Namespace, config: NodeConfig) -> int:
    node = await trio.to_thread.run_sync(client.find_node, config.store.data_dir)
    if node is not None:
        if args.bucket_command == "list":
            listed = await trio.to_thread.run_sync(node.call, "GET", "/admin/buckets")
            rows = [(b["name"], b["owner"]) for b in listed]
        elif args.bucket_command == "create":
            path = f"/admin/buckets/{quote(args.name, safe='')}?owner={quote(args.owner)}"
            await trio.to_thread.run_sync(node.call, "PUT", path)
        else:
            path = f"/admin/buckets/{quote(args.name, safe='')}"
            await trio.to_thread.run_sync(node.call, "DELETE", path)
    else:
        await _refuse_offline_in_cluster(config, "objfs bucket on a stopped node")
        users, _ = await trio.to_thread.run_sync(Users.load, config.store.data_dir)
        async with open_store(config.store, background_jobs=False) as store:
            if args.bucket_command == "list":
                rows = []
                for each in store.list_buckets():
                    owner = users.by_canonical_id(each.owner)
                    rows.append((each.name, each.owner if owner is None else owner.name))
            elif args.bucket_command == "create":
                user = users.get(args.owner)
                if user is None:
                    raise UsageError(f"no user named {args.owner!r} (see `objfs user list`)")
                await store.create_bucket(args.name, owner=user.canonical_id)
            else:
                await store.delete_bucket(args.name)
    if args.bucket_command == "list":
        for name, owner in rows:
            print(f"{name}\t{owner}")
    else:
        print(f"bucket {args.name} {args.bucket_command}d")
    return 0


async def _config_check(args: argparse.Namespace, config: NodeConfig) -> int:
    """The config parsed (main did that), then what can be checked without starting."""
    store = config.store
    try:
        await trio.to_thread.run_sync(
            lambda: check_durable_filesystem(store.data_dir, buffered=store.buffered_io)
        )
    except DeviceError as exc:
        raise ConfigError(f"store.data_dir: {exc}") from None
    if config.fuse.mountpoint:
        await trio.to_thread.run_sync(check_mount_settings, config.fuse)
    source = args.config or default_config_path() or "no file (defaults)"
    print(f"config: {source}: valid")
    for section in fields(config):
        values = getattr(config, section.name)
        for item in fields(values):
            print(f"  {section.name}.{item.name} = {getattr(values, item.name)!r}")
    return 0


async def _serve(args: argparse.Namespace, config: NodeConfig) -> int:
    if not config.store.device_paths():
        print(f"objfs: creating the embedded default in {config.store.data_dir}")
        await create_data_dir(
            config.store.data_dir,
            buffered=config.store.buffered_io,
            progress=_ProgressBar("format", "device files"),
        )
    if args.once:
        async with open_store(config.store) as store:
            _print_status(store)
        return 0
    stop = trio.Event()

    def ready(store: Store, bound: list[str], users: Users) -> None:
        _print_status(store)
        where = ", ".join(bound) or "nowhere (s3.address is empty)"
        print(f"objfs: serving S3 on {where}; Ctrl-C stops.", flush=True)
        if config.fuse.mountpoint:
            shown = f"bucket {config.fuse.bucket}" if config.fuse.bucket else "every bucket"
            print(f"objfs: {shown} mounted at {config.fuse.mountpoint}", flush=True)

    await run_node(config, stop=stop, on_ready=ready)
    print("objfs: stopped cleanly")
    return 0
