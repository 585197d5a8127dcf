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
        ("[s3]\nport = 1\n", "s3: unknown section"),
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
