"""Config: defaults load, bad values and unknown keys are refused naming the key.

Method: write TOML files and call load_config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from objfs.config import load_config
from objfs.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "objfs.toml"
    path.write_text(text)
    return str(path)


def test_no_file_gives_defaults_and_the_flag_overrides_data_dir() -> None:
    config = load_config(None, data_dir="/srv/x")
    assert config.store.data_dir == "/srv/x"
    assert config.store.inline_max_bytes == 4096


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\ndevices = ["/dev/a"]\nfragment_size_bytes = 2097152\n')
    config = load_config(path)
    assert config.store.devices == ("/dev/a",)
    assert config.store.device_paths() == ("/dev/a",)
    assert config.store.fragment_size_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[store]\nsegment_size = 1\n", "store.segment_size: unknown key"),
        ("[store]\nfragment_size_bytes = 1000\n", "store.fragment_size_bytes"),
        ("[store]\nfragment_size_bytes = 100000\n", "store.fragment_size_bytes"),
        ('[store]\nbuffered_io = "yes"\n', "store.buffered_io"),
        ("[store]\ndevices = [1]\n", "store.devices"),
        ("[s3]\nport = 1\n", "s3.port: unknown key"),
        ("[fuse]\nmount = 1\n", "fuse.mount: unknown key"),
        ("[fuse]\ncache_timeout_ms = -1\n", "fuse.cache_timeout_ms"),
        ("[nfs]\n", "nfs: unknown section"),
        ('[s3]\naddress = "nowhere"\n', "s3.address"),
        ("[store\n", "not valid TOML"),
        ("[store]\ninline_max_bytes = -1\n", "store.inline_max_bytes"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        load_config(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.toml"))


def test_erasure_keys_load_and_fragment_size_bounds_are_inclusive(tmp_path: Path) -> None:
    """ec_policy, ec_backend and the scrub keys are read from the file; "auto" is the
    default; fragment_size_bytes takes 64 KiB and 16 MiB, the ends of its range."""
    assert load_config(None).store.ec_policy == "auto"
    assert load_config(None).store.ec_backend == "auto"
    text = (
        '[store]\nec_policy = "8+5"\nec_backend = "isa_l_rs_cauchy"\n'
        "scrub_rate_bytes_per_s = 0\nscrub_interval_ms = 1000\n"
    )
    store = load_config(write(tmp_path, text)).store
    assert (store.ec_policy, store.ec_backend) == ("8+5", "isa_l_rs_cauchy")
    assert (store.scrub_rate_bytes_per_s, store.scrub_interval_ms) == (0, 1000)
    for size in (64 * 1024, 16 * 1024 * 1024):
        text = f"[store]\nfragment_size_bytes = {size}\n"
        assert load_config(write(tmp_path, text)).store.fragment_size_bytes == size


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[store]\nec_policy = "4-2"\n', 'store.ec_policy: .*"K\\+M"'),
        ('[store]\nec_policy = "0+2"\n', "store.ec_policy"),
        ('[store]\nec_policy = "4+"\n', "store.ec_policy"),
        ('[store]\nec_policy = "automatic"\n', "store.ec_policy"),
        ("[store]\nec_policy = 4\n", "store.ec_policy: must be a string"),
        ("[store]\nec_backend = 1\n", "store.ec_backend: must be a string"),
        ("[store]\nfragment_size_bytes = 61440\n", "store.fragment_size_bytes: .*65536 to"),
        ("[store]\nfragment_size_bytes = 16781312\n", "store.fragment_size_bytes: .*16777216"),
        ("[store]\nfragment_size_bytes = 69632.5\n", "fragment_size_bytes: must be a whole number"),
        ("[store]\nfragment_size_bytes = 65537\n", "store.fragment_size_bytes: .*multiple of 4096"),
        ("[store]\nscrub_rate_bytes_per_s = -1\n", "store.scrub_rate_bytes_per_s"),
        ("[store]\nscrub_interval_ms = 999\n", "store.scrub_interval_ms"),
    ],
)
def test_bad_erasure_config_is_refused_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    """A malformed erasure shape, a wrongly typed backend, a fragment size outside
    64 KiB..16 MiB or not whole blocks, a bad scrub rate or interval: ConfigError
    naming the key (and, for the size, its range)."""
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, text))


def test_environment_over_file_and_flags_over_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[s3]\naddress = "127.0.0.1:7000"\n[node]\ngraceful_timeout_ms = 5000\n')
    environ = {
        "OBJFS_S3_ADDRESS": "127.0.0.1:7100",
        "OBJFS_NODE_GRACEFUL_TIMEOUT_MS": "7000",
        "OBJFS_FUSE_ALLOW_OTHER": "false",
        "OBJFS_STORE_DEVICES": "/dev/a,/dev/b",
        "OBJFS_ROOT_ACCESS_KEY": "not config",  # other OBJFS_ names are left alone
    }
    config = load_config(path, environ=environ)
    assert config.s3.address == "127.0.0.1:7100"
    assert config.node.graceful_timeout_ms == 7000
    assert config.fuse.allow_other is False
    assert config.store.devices == ("/dev/a", "/dev/b")
    flagged = load_config(path, environ=environ, overrides={"s3.address": "127.0.0.1:7200"})
    assert flagged.s3.address == "127.0.0.1:7200"
    assert flagged.node.graceful_timeout_ms == 7000


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OBJFS_S3_PORT": "1"}, "OBJFS_S3_PORT: s3.port is not a config key"),
        ({"OBJFS_NODE_GRACEFUL_TIMEOUT_MS": "soon"}, "OBJFS_NODE_GRACEFUL_TIMEOUT_MS"),
        ({"OBJFS_FUSE_ALLOW_OTHER": "maybe"}, "OBJFS_FUSE_ALLOW_OTHER"),
        ({"OBJFS_NODE_GRACEFUL_TIMEOUT_MS": "-1"}, "node.graceful_timeout_ms"),
        ({"OBJFS_NODE_LOG_FORMAT": "xml"}, "node.log_format"),
        ({"OBJFS_NODE_ADMIN_ADDRESS": "nowhere"}, "node.admin_address"),
    ],
)
def test_bad_environment_values_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=environ)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[node]\nlog_level = "loud"\n', "node.log_level"),
        ("[node]\ngraceful_timeout_ms = -5\n", "node.graceful_timeout_ms"),
        ('[node]\nadmin_address = "localhost"\n', "node.admin_address"),
        ("[node]\nwatchdog = 1\n", "node.watchdog: unknown key"),
    ],
)
def test_bad_node_section_values_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert named in str(caught.value)


def test_a_bad_value_from_the_environment_names_the_variable_too() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"OBJFS_S3_ADDRESS": "localhost"})
    assert str(caught.value) == "OBJFS_S3_ADDRESS: s3.address: 'localhost' is not host:port"
    # The same bad value given by a flag is the flag's: no variable is named.
    with pytest.raises(ConfigError) as caught:
        load_config(
            None, environ={"OBJFS_S3_ADDRESS": "127.0.0.1:1"}, overrides={"s3.address": "x"}
        )
    assert str(caught.value).startswith("s3.address:")
