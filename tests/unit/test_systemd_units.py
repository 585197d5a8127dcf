"""The systemd units: systemd accepts them, and they keep the node's contract and the house rules.

Method: copy systemd/objfs@.service and systemd/objfs-fsck@.service into a
temporary directory. Point their /opt/objfs/bin/objfs at this environment's
`objfs` script, because verify refuses a command that does not exist. Then run
`systemd-analyze verify` on an instance of each (`objfs@test.service` with the
template beside it) and check that it says nothing about our units. Do the
same with the drop-ins that docs/operations.md shows. Separately, read the
units' settings as plain text: Type=notify and its timeouts agree with the
node's graceful timeout, no setting gives the node a mount namespace (the host
would never see the FUSE mount), and a comment says why each setting is there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import objfs.config

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
NODE_UNIT = SYSTEMD_DIR / "objfs@.service"
FSCK_UNIT = SYSTEMD_DIR / "objfs-fsck@.service"
INSTALLED_OBJFS = "/opt/objfs/bin/objfs"
OPERATIONS_DOC = SYSTEMD_DIR.parent / "docs" / "operations.md"

# Settings that give the service its own mount namespace (systemd.exec(5),
# PrivateMounts=). A FUSE mount made inside one never reaches the host.
MOUNT_NAMESPACE_SETTINGS = {
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateIPC",
    "PrivateNetwork",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "MountFlags",
}


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting, in file order."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key, _, value = stripped.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def settings(path: Path, section: str = "Service") -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for where, key, value in directives(path):
        if where == section:
            values.setdefault(key, []).append(value)
    return values


def seconds(timespan: str) -> float:
    """A systemd time span ("90s", "1min 30s", "5min", "90") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+)\s*([a-z]*)", timespan)
    assert parts, f"{timespan!r} is not a time span"
    return sum(int(number) * units[unit] for number, unit in parts)


def objfs_script() -> str | None:
    beside = Path(sys.executable).parent / "objfs"
    return str(beside) if beside.exists() else shutil.which("objfs")


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (scripts/setup.sh installs the systemd package)",
)


def verify(directory: Path, *instances: str) -> None:
    """Copy both units into `directory` and `systemd-analyze verify` the instances.

    Drop-ins already in DIRECTORY/objfs@.service.d/ are loaded too.
    """
    script = objfs_script()
    if script is None:
        pytest.skip("the objfs console script is not installed in this environment")
    for unit in (NODE_UNIT, FSCK_UNIT):
        text = unit.read_text().replace(INSTALLED_OBJFS, script)
        (directory / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(directory / name) for name in instances)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Warnings about the host's own units can show up too; only ours count.
    ours = [line for line in result.stderr.splitlines() if "objfs" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    verify(tmp_path, "objfs@test.service", "objfs-fsck@test.service")


@needs_systemd_analyze
def test_the_drop_ins_shown_in_operations_md_are_accepted_too(tmp_path: Path) -> None:
    drop_ins = re.findall(r"```ini\n(.*?)```", OPERATIONS_DOC.read_text(), re.DOTALL)
    assert drop_ins, "docs/operations.md shows no drop-in"
    directory = tmp_path / "objfs@.service.d"
    directory.mkdir()
    for number, text in enumerate(drop_ins):
        (directory / f"{number}.conf").write_text(text)
    verify(tmp_path, "objfs@test.service")


def test_node_unit_is_notify_with_watchdog_and_time_to_drain() -> None:
    service = settings(NODE_UNIT)
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert seconds(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["on-failure"]
    node_options = getattr(objfs.config, "NodeOptions", None)
    graceful_ms = node_options().graceful_timeout_ms if node_options else 30_000
    # SIGTERM drains for graceful_timeout_ms, then unmounts and checkpoints: systemd
    # must wait for all of it, with room to spare, before it sends SIGKILL.
    assert seconds(service["TimeoutStopSec"][0]) >= graceful_ms / 1000 + 30


def test_node_unit_runs_the_installed_node_on_its_state_directory() -> None:
    service = settings(NODE_UNIT)
    assert service["StateDirectory"] == ["objfs/%i"]
    config_and_data = "--config /etc/objfs/%i.toml --data ${STATE_DIRECTORY}"
    assert service["ExecStartPre"] == [f"{INSTALLED_OBJFS} config check {config_and_data}"]
    assert service["ExecStart"] == [f"{INSTALLED_OBJFS} serve {config_and_data}"]


def test_node_unit_has_no_setting_that_hides_the_fuse_mount() -> None:
    used = {key for _, key, _ in directives(NODE_UNIT)}
    assert used & MOUNT_NAMESPACE_SETTINGS == set()


def test_fsck_unit_runs_once_and_only_while_the_node_is_stopped() -> None:
    unit = settings(FSCK_UNIT, "Unit")
    service = settings(FSCK_UNIT)
    assert service["Type"] == ["oneshot"]
    assert "objfs@%i.service" in unit["Conflicts"]
    assert unit.get("Before", []) + unit.get("After", []), "Conflicts= needs an ordering"
    assert service["ExecStart"] == [
        f"{INSTALLED_OBJFS} fsck --config /etc/objfs/%i.toml --data /var/lib/objfs/%i"
    ]


@pytest.mark.parametrize("unit", [NODE_UNIT, FSCK_UNIT], ids=lambda unit: unit.name)
def test_every_setting_has_a_comment_saying_why(unit: Path) -> None:
    """The line right above every setting is a comment (section headers excepted)."""
    previous = ""
    bare: list[str] = []
    for line in unit.read_text().splitlines():
        stripped = line.strip()
        is_setting = stripped and not stripped.startswith(("#", ";", "["))
        if is_setting and not previous.startswith("#"):
            bare.append(stripped)
        previous = stripped
    assert bare == []
