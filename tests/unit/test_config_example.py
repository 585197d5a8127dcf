"""The sample config systemd/objfs.toml.example loads, and it lists every key the config has.

Method: load the file with `load_config`, as `objfs serve --config` does. Then
read it again as plain TOML and compare each table's keys with the fields of
the dataclass that NodeConfig keeps for that section. A key added to
objfs/config.py without a line in the example fails here. Only the names are
compared, not the values: the example explains the defaults, and this test
does not pin them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

import objfs.config
from objfs.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "objfs.toml.example"


def sections() -> dict[str, Any]:
    """Section name -> its dataclass, from NodeConfig's own fields ([store], [s3], ...)."""
    hints = typing.get_type_hints(objfs.config.NodeConfig)
    return {field.name: hints[field.name] for field in dataclasses.fields(objfs.config.NodeConfig)}


def test_example_loads_as_a_config() -> None:
    config = load_config(str(EXAMPLE))
    assert isinstance(config, objfs.config.NodeConfig)


def test_example_has_a_table_for_every_section() -> None:
    with EXAMPLE.open("rb") as file:
        raw = tomllib.load(file)
    assert set(raw) == set(sections())


@pytest.mark.parametrize("section", sorted(sections()))
def test_example_lists_every_key_of_the_section(section: str) -> None:
    with EXAMPLE.open("rb") as file:
        raw = tomllib.load(file)
    fields = {field.name for field in dataclasses.fields(sections()[section])}
    assert set(raw.get(section, {})) == fields
