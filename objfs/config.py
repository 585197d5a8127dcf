"""objfs.config — one TOML file parsed into frozen dataclasses, validated at load.

Every value has a unit in its name and a default. Three layers, each over the
one before: the file (`--config`, else /etc/objfs/objfs.toml when present),
environment variables `OBJFS_<SECTION>_<KEY>` (`OBJFS_S3_ADDRESS=...`), then the
command line's flags. Unknown keys and bad values are refused with a
`ConfigError` that names the key (or variable) and says why. Nothing else in
objfs reads configuration files or environment variables for these settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from objfs.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB

DEFAULT_DATA_DIR = "./objfs-data"
DEFAULT_CONFIG_PATH = "/etc/objfs/objfs.toml"
ENV_PREFIX = "OBJFS_"
_EC_SHAPE = re.compile(r"[1-9][0-9]?\+[0-9]{1,2}")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """What the storage core needs to open and run."""

    data_dir: str = (
        DEFAULT_DATA_DIR  # device files live in data_dir/devices unless `devices` is set
    )
    devices: tuple[str, ...] = ()  # explicit device paths (block devices or files)
    buffered_io: bool = False  # opt-in for filesystems that refuse O_DIRECT (tmpfs)
    inline_max_bytes: int = 4 * KiB  # objects up to this size live in their WAL record
    # Erasure coding: "auto" (by device count: 1+0, 1+1, 2+1, 2+2, 3+2, then 4+2) or
    # "K+M"; backend "auto" (ISA-L) or a pyeclib backend name. See erasure.py.
    ec_policy: str = "auto"
    ec_backend: str = "auto"
    # Each data fragment of a stripe holds up to this many bytes: a segment (one
    # stripe) holds k times this. ~1 MiB keeps one pyeclib call (which holds the GIL) short.
    fragment_size_bytes: int = 1 * MiB
    writer_in_flight_segments: int = 4  # segment writes one writer keeps going at once
    device_threads: int = 4  # syscalls in flight per device
    checkpoint_interval_ms: int = 60_000  # checkpoint at least this often when the WAL moved
    # The background scrubber reads every fragment once per interval at most
    # this fast (0: no background scrub; `objfs scrub` still runs on demand).
    scrub_interval_ms: int = 7 * 86_400_000
    scrub_rate_bytes_per_s: int = 64 * MiB
    # In a cluster: snapshot the state (the index, the catalog) and drop the Raft
    # log behind it once the log holds this many entries (docs/cluster.md).
    snapshot_entries: int = 100_000
    # In a cluster: how often each node looks for stripes written while a node was
    # down and stores them again in the full shape once every node is up (0: never).
    rebalance_interval_ms: int = 60_000
    read_only: bool = False

    def __post_init__(self) -> None:
        _check_range("store.inline_max_bytes", self.inline_max_bytes, 0, 64 * KiB)
        _check_range("store.fragment_size_bytes", self.fragment_size_bytes, 64 * KiB, 16 * MiB)
        if self.fragment_size_bytes % (4 * KiB):
            raise ConfigError("store.fragment_size_bytes: must be a multiple of 4096")
        if self.ec_policy != "auto" and not _EC_SHAPE.fullmatch(self.ec_policy):
            raise ConfigError(
                f'store.ec_policy: {self.ec_policy!r} is not "auto" or "K+M" like "4+2"'
            )
        _check_range("store.writer_in_flight_segments", self.writer_in_flight_segments, 1, 64)
        _check_range("store.device_threads", self.device_threads, 1, 64)
        _check_range("store.checkpoint_interval_ms", self.checkpoint_interval_ms, 100, 86_400_000)
        _check_range("store.scrub_interval_ms", self.scrub_interval_ms, 1000, 365 * 86_400_000)
        _check_range("store.scrub_rate_bytes_per_s", self.scrub_rate_bytes_per_s, 0, 1 << 40)
        _check_range("store.snapshot_entries", self.snapshot_entries, 100, 1 << 40)
        if self.rebalance_interval_ms:
            _check_range(
                "store.rebalance_interval_ms", self.rebalance_interval_ms, 1000, 365 * 86_400_000
            )

    def device_paths(self) -> tuple[str, ...]:
        """The configured devices, or the embedded default's files in the data directory."""
        if self.devices:
            return self.devices
        directory = os.path.join(self.data_dir, "devices")
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(".img"))
        except FileNotFoundError:
            return ()
        return tuple(os.path.join(directory, name) for name in names)


@dataclass(frozen=True, slots=True)
class S3Config:
    """The S3 face: where it listens and how it names itself."""

    address: str = "127.0.0.1:9000"  # host:port (port 0: any free one); "" for no S3
    domain: str = ""  # virtual-hosted-style: BUCKET.domain (path-style always works)
    region: str = "us-east-1"
    max_clock_skew_ms: int = 900_000  # AWS's 15 minutes for signed requests

    def __post_init__(self) -> None:
        if self.address:
            _check_address("s3.address", self.address)
        if not re.fullmatch(r"[a-z0-9-]{1,32}", self.region):
            raise ConfigError(f"s3.region: {self.region!r} is not a region name like us-east-1")
        _check_range("s3.max_clock_skew_ms", self.max_clock_skew_ms, 1000, 86_400_000)


@dataclass(frozen=True, slots=True)
class FuseConfig:
    """The FUSE face: where it mounts and what it shows (`objfs serve --mount`)."""

    mountpoint: str = ""  # "" for no mount
    bucket: str = ""  # mount this one bucket as the root; "" for every bucket
    allow_other: bool = True  # let other users in (permissions are still checked)
    # How long the kernel may keep names and attributes without asking again. 0
    # makes every S3 change visible at once; changes through S3 are also pushed
    # to the kernel as invalidations, whatever this is.
    cache_timeout_ms: int = 0
    # Owner of what was never given one through the mount (objects put over
    # S3, buckets): -1 for the user running the node.
    default_uid: int = -1
    default_gid: int = -1

    def __post_init__(self) -> None:
        _check_range("fuse.cache_timeout_ms", self.cache_timeout_ms, 0, 3_600_000)
        _check_range("fuse.default_uid", self.default_uid, -1, 2**32 - 2)
        _check_range("fuse.default_gid", self.default_gid, -1, 2**32 - 2)


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """The process around the faces: its admin listener, how it stops, how it logs."""

    # /metrics, /health/live, /health/ready and the authenticated /admin/* that
    # `objfs status` and `objfs bucket` use; "" for none. Port 0: any free one.
    admin_address: str = "127.0.0.1:9001"
    # SIGTERM: in-flight requests get this long to finish before they are cut;
    # the unit's TimeoutStopSec must be above it (plus the final checkpoint).
    graceful_timeout_ms: int = 30_000
    log_format: str = "text"  # "text" or "json": one line per event either way
    log_level: str = "info"  # "debug", "info", "warning" or "error"

    def __post_init__(self) -> None:
        if self.admin_address:
            _check_address("node.admin_address", self.admin_address)
        _check_range("node.graceful_timeout_ms", self.graceful_timeout_ms, 0, 3_600_000)
        if self.log_format not in ("text", "json"):
            raise ConfigError(f'node.log_format: {self.log_format!r} is not "text" or "json"')
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"node.log_level: {self.log_level!r} is not debug, info, warning or error"
            )


def _check_address(key: str, address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}: {address!r} is not host:port")


def _check_range(key: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is not a whole number from {low} to {high}")


def _build_section(cls: type[Any], section: str, raw: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{section}.{name}: unknown key (known: {', '.join(sorted(known))})")
        default = getattr(cls(), name)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{name}: must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{name}: must be true or false")
        elif not isinstance(value, type(default)) or isinstance(value, bool):
            kind = {int: "whole number", str: "string"}.get(type(default), type(default).__name__)
            raise ConfigError(f"{section}.{name}: must be a {kind}")
        values[name] = value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    store: StoreConfig
    s3: S3Config = S3Config()
    fuse: FuseConfig = FuseConfig()
    node: NodeOptions = NodeOptions()


_SECTIONS: dict[str, type[Any]] = {
    "store": StoreConfig,
    "s3": S3Config,
    "fuse": FuseConfig,
    "node": NodeOptions,
}


def default_config_path() -> str | None:
    """/etc/objfs/objfs.toml when it exists (what `objfs` reads without --config)."""
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def load_config(
    path: str | None,
    *,
    data_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Parse and validate a TOML config, then the environment, then the flags.

    Args:
        environ: `OBJFS_<SECTION>_<KEY>` variables (default: none; the CLI passes
            os.environ). Other OBJFS_ names (OBJFS_ROOT_ACCESS_KEY) are not config.
        overrides: "section.key" -> value from command-line flags; `data_dir` is
            the same as {"store.data_dir": data_dir}.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown key or bad value (named).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        known = ", ".join(sorted(_SECTIONS))
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section (known: {known})")
    sections: dict[str, dict[str, Any]] = {}
    for section in _SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"{section}: must be a table")
        sections[section] = dict(raw.get(section, {}))
    from_env: dict[str, str] = {}  # "section.key" -> the variable that set it
    for name, value in (environ or {}).items():
        dotted = _apply_env(sections, name, value)
        if dotted is not None:
            from_env[dotted] = name
    layered = dict(overrides or {})
    if data_dir is not None:
        layered["store.data_dir"] = data_dir
    for dotted, value in layered.items():
        section, _, key = dotted.partition(".")
        sections[section][key] = value
        from_env.pop(dotted, None)
    built = {}
    for section, cls in _SECTIONS.items():
        try:
            built[section] = _build_section(cls, section, sections[section])
        except ConfigError as exc:
            dotted = str(exc).partition(":")[0]
            if dotted in from_env:  # say where the bad value came from
                raise ConfigError(f"{from_env[dotted]}: {exc}") from None
            raise
    return NodeConfig(**built)


def _apply_env(sections: dict[str, dict[str, Any]], name: str, text: str) -> str | None:
    """OBJFS_S3_ADDRESS=... into sections["s3"]["address"], typed by the key's
    default; returns "s3.address" (None: not a config variable)."""
    if not name.startswith(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX) :].lower()
    section, _, key = rest.partition("_")
    if section not in _SECTIONS:
        return None  # not a config variable (OBJFS_ROOT_ACCESS_KEY and the like)
    cls = _SECTIONS[section]
    known = {f.name for f in fields(cls)}
    if key not in known:
        raise ConfigError(
            f"{name}: {section}.{key} is not a config key (known: {', '.join(sorted(known))})"
        )
    default = getattr(cls(), key)
    value: Any = text
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name}: {text!r} is not true or false")
        value = text.lower() in ("true", "1", "yes")
    elif isinstance(default, int):
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}: {text!r} is not a whole number") from None
    elif isinstance(default, tuple):
        value = [part for part in text.split(",") if part]
    sections[section][key] = value
    return f"{section}.{key}"
