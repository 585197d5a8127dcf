"""The `objfs` command on an erasure-coded node: status, lost devices, replace, scrub.

Method: a 4+2 node on six 64 MiB device files with 64 KiB fragments, holding
seeded random objects (ec_node.py); device files are deleted, moved aside, or
have fragments overwritten with garbage behind the node's back, and `python -m
objfs` runs in a subprocess without a terminal (one test gives it a pty). What
is checked is what a user sees (exit codes, lines) and what is on disk after
(objects byte-identical, fragment bytes, superblocks). User mistakes must print
one line and exit 2, never a traceback.
"""

from __future__ import annotations

import os
import pty
import random
import re
import subprocess
import sys

from ec_node import (
    Node,
    damage_fragments,
    inspect_node,
    make_node,
    make_objects,
    node_args,
    objfs,
    read_fragment,
    superblock_copies,
)

SEED = 20_240_611  # fixed: these tests check behaviour, not random schedules
PROGRESS = re.compile(r"^scrub: (\d+)/(\d+) segments$")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def parse_status(stdout: str) -> dict[str, str]:
    """`objfs status` output as {"health": "healthy; ...", ...}."""
    fields = {}
    for line in stdout.splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def status_lines(node: Node) -> dict[str, str]:
    status = objfs(*node_args(node), "status")
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    return parse_status(status.stdout)


def test_status_shows_the_erasure_policy_and_a_healthy_node(disk_dir: str) -> None:
    """A freshly formatted six-file node reports 4+2 coding over 6 devices and healthy."""
    objects = make_objects(SEED, 8)
    node = make_node(disk_dir, objects)
    lines = status_lines(node)
    assert lines["erasure"] == "4+2 (isa_l_rs_vand) over 6 devices"
    assert lines["health"] == "healthy; down [], owed [], bad fragments seen 0"
    size = sum(len(data) for data in objects.values())
    assert lines["objects"] == f"8 (8 versions, {size} bytes)"
    assert lines["devices"] == ", ".join(node.device_path(i) for i in range(6))


def test_status_after_losing_two_device_files_says_degraded_and_names_them(
    disk_dir: str,
) -> None:
    """With two of six device files gone the node still opens, says DEGRADED with
    both down and owed, and every object still reads back byte-identical."""
    objects = make_objects(SEED, 24)
    node = make_node(disk_dir, objects)
    os.unlink(node.device_path(1))
    os.unlink(node.device_path(4))
    status = objfs(*node_args(node), "status")
    assert status.returncode == 0, status.stderr
    lines = parse_status(status.stdout)
    assert lines["health"] == "DEGRADED; down [1, 4], owed [1, 4], bad fragments seen 0"
    assert lines["devices"] == ", ".join(node.device_path(i) for i in (0, 2, 3, 5))
    assert lines["objects"].startswith("24 (24 versions")
    assert "device 1 is missing: the node runs degraded" in status.stderr
    assert "Traceback" not in status.stderr
    state = inspect_node(node, objects)
    assert (state.down, state.owed) == ((1, 4), (1, 4))


def test_losing_three_device_files_stops_serve_and_status_with_one_line(disk_dir: str) -> None:
    """Three of six device files gone is beyond 4+2: serve, status and scrub each refuse
    with one line naming the missing devices; with the files back, the failed
    opens have changed nothing (healthy, nothing owed)."""
    objects = make_objects(SEED, 8)
    node = make_node(disk_dir, objects)
    for index in (0, 2, 5):
        os.rename(node.device_path(index), node.device_path(index) + ".aside")
    for command in (["serve", "--once"], ["status"], ["scrub"]):
        result = objfs(*node_args(node), *command)
        line = one_line_error(result)
        assert line.startswith("objfs: devices [0, 2, 5] of node "), line
        assert "(found 3 of 6)" in line and "can run without at most 2" in line, line
        assert result.stdout == "", result.stdout
    for index in (0, 2, 5):
        os.rename(node.device_path(index) + ".aside", node.device_path(index))
    lines = status_lines(node)
    assert lines["health"] == "healthy; down [], owed [], bad fragments seen 0"
    assert inspect_node(node, objects).damaged == dict.fromkeys(range(6), 0)


def test_device_replace_of_a_present_device_fails_with_one_line(disk_dir: str) -> None:
    """`device replace` of a device the node has refuses, naming it present, and
    leaves the node's superblocks as they were."""
    node = make_node(disk_dir, make_objects(SEED, 4))
    before = superblock_copies(node)
    result = objfs(*node_args(node), "device", "replace", "2", os.path.join(disk_dir, "new.img"))
    line = one_line_error(result)
    assert re.fullmatch(
        r"objfs: device 2 of node [0-9a-f-]+ is present; only a missing device can be "
        r"replaced \(missing: none\)",
        line,
    ), line
    assert superblock_copies(node) == before


def test_device_replace_of_a_present_device_leaves_no_file_behind(disk_dir: str) -> None:
    """A refused `device replace` must not leave a new 64 MiB device file behind."""
    node = make_node(disk_dir, make_objects(SEED, 4))
    target = os.path.join(disk_dir, "new.img")
    result = objfs(*node_args(node), "device", "replace", "2", target)
    assert result.returncode == 2
    assert not os.path.exists(target)


def test_device_replace_of_a_present_device_at_its_own_path_refuses_even_forced(
    disk_dir: str,
) -> None:
    """`device replace 2` on a healthy node (default path: devices/dev2.img, the
    present device 2 itself) must say device 2 is present, with or without
    --force, and leave its superblock (its device id) as it was."""
    node = make_node(disk_dir, make_objects(SEED, 4))
    before = superblock_copies(node)
    line = one_line_error(objfs(*node_args(node), "device", "replace", "2"))
    assert "device 2 of node" in line and "is present" in line, line
    forced = objfs(*node_args(node), "device", "replace", "2", "--force")
    assert forced.returncode == 2, forced.stdout
    assert superblock_copies(node) == before


def test_device_replace_of_a_missing_device_heals_it_and_prints_the_report(
    disk_dir: str,
) -> None:
    """Replacing a lost metadata device creates its file, adopts it, rebuilds one
    fragment of every segment onto it, reports that and exits 0; afterwards the
    node is healthy, fsck --verify-data is clean and every fragment intact."""
    objects = make_objects(SEED, 24)
    node = make_node(disk_dir, objects)
    segments = inspect_node(node, objects).segments
    os.unlink(node.device_path(0))
    result = objfs(*node_args(node), "device", "replace", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    path = node.device_path(0)
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"objfs: created {path} ({64 * 1024 * 1024} bytes)",
        f"objfs: {path} is device 0 now; healing onto it",
        f"heal device 0: 0/{segments} segments",
    ]
    assert f"heal device 0: {segments}/{segments} segments" in lines
    assert f"scrub: 24 objects, {segments} segments" in result.stdout
    assert (
        f"  damaged {segments}, repaired {segments}, skipped on down devices 0, "
        "unrecoverable objects 0"
    ) in lines
    assert lines[-2:] == ["  devices healed: [0]", "  clean: full redundancy"]
    lines_after = status_lines(node)
    assert lines_after["health"] == "healthy; down [], owed [], bad fragments seen 0"
    checked = objfs(*node_args(node), "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout
    assert "fsck: clean; 24 keys" in checked.stdout
    state = inspect_node(node, objects)
    assert state.damaged == dict.fromkeys(range(6), 0) and state.owed == ()


def test_scrub_no_repair_reports_garbage_and_a_scrub_repairs_it(disk_dir: str) -> None:
    """Fragments overwritten with garbage on two devices: `scrub --no-repair` counts
    them, exits 1 and changes nothing; `scrub` rewrites each with its original
    bytes, exits 0 with "clean: full redundancy"; a third pass finds nothing."""
    objects = make_objects(SEED, 24)
    node = make_node(disk_dir, objects)
    originals = damage_fragments(node, {1, 4}, random.Random(SEED), share=0.3)
    damaged = len(originals)
    garbage = {
        where: read_fragment(node, *where, len(original)) for where, original in originals.items()
    }
    report = objfs(*node_args(node), "scrub", "--no-repair")
    assert report.returncode == 1, report.stdout + report.stderr
    assert f"  damaged {damaged}, repaired 0, skipped on down devices 0" in report.stdout
    assert report.stdout.splitlines()[-1] == "  NOT clean"
    for where, original in originals.items():
        assert read_fragment(node, *where, len(original)) == garbage[where]
    repaired = objfs(*node_args(node), "scrub", "--rate", "200M")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"  damaged {damaged}, repaired {damaged}, skipped on down devices 0" in repaired.stdout
    assert repaired.stdout.splitlines()[-1] == "  clean: full redundancy"
    for where, original in originals.items():
        assert read_fragment(node, *where, len(original)) == original
    again = objfs(*node_args(node), "scrub")
    assert again.returncode == 0, again.stdout
    assert "  damaged 0, repaired 0, skipped on down devices 0" in again.stdout
    checked = objfs(*node_args(node), "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout


def test_scrub_without_a_tty_prints_plain_progress_lines(disk_dir: str) -> None:
    """Piped, `scrub` prints "scrub: DONE/TOTAL segments" lines from 0 to the total
    (no bar, no carriage returns), then the report."""
    objects = make_objects(SEED, 40)
    node = make_node(disk_dir, objects)
    segments = inspect_node(node, objects).segments
    assert segments > 64, "too few segments for several progress lines"
    result = objfs(*node_args(node), "scrub")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\r" not in result.stdout and "[" not in result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("scrub: ")]
    report = progress.pop()  # "scrub: 40 objects, ..." opens the report
    assert report.startswith(f"scrub: 40 objects, {segments} segments"), report
    counts = []
    for line in progress:
        match = PROGRESS.match(line)
        assert match is not None, line
        assert int(match.group(2)) == segments
        counts.append(int(match.group(1)))
    assert counts[0] == 0 and counts[-1] == segments and len(counts) >= 3
    assert counts == sorted(set(counts))


def test_scrub_on_a_tty_draws_one_redrawn_bar(disk_dir: str) -> None:
    """On a terminal, `scrub` redraws one bar in place ("\\rscrub [###...] N/T")
    instead of printing progress lines."""
    objects = make_objects(SEED, 16)
    node = make_node(disk_dir, objects)
    segments = inspect_node(node, objects).segments
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "objfs", *node_args(node), "scrub"],
            stdout=terminal,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(timeout=60) == 0
    finally:
        os.close(controller)
    text = output.decode()
    assert f"\rscrub [{'#' * 40}] {segments}/{segments}" in text
    assert "\rscrub [........................................] 0/" in text
    assert not re.search(r"scrub: \d+/\d+ segments", text)
    assert "clean: full redundancy" in text
