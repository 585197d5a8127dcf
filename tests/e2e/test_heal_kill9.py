"""Crash safety of healing and scrubbing under SIGKILL, in real processes on device files.

Goal: killing a heal or a scrub at any moment loses nothing and undoes no
repair. Every object reads back byte-identical through a fresh open; a device
stays owed (in the superblocks, as `objfs fsck` shows) until a heal pass over it
has finished; a device that is not owed holds every one of its fragments intact;
and the heal resumes, on demand (`objfs scrub`) or in the background of the next
open, until `objfs scrub` and `objfs fsck --verify-data` find the node clean.

Method: a 4+2 node on six 64 MiB device files with 64 KiB fragments (256 KiB
segments) holding ~50 MB of seeded random objects (ec_node.py). Two device files
(1, a metadata device, and 4) are deleted, then, one cycle each: `objfs device
replace 1`, `objfs scrub` twice, `objfs device replace 4`, `objfs scrub --rate`,
and twice a child that opens the store with its background jobs (heal_child.py).
Each is SIGKILLed at a random moment of its heal: a random delay (up to 0.15 s)
after the first progress line past a random point in the first 60% of the pass
(the CLI prints "heal device 1: 64/230 segments" every 64 segments, before
checking them); or, for a quarter of the replaces, up to 0.3 s after "healing
onto it", while the open and the checkpoints that give a replaced metadata
device its bodies run; or, for the child, up to 0.8 s after its open. After each
kill the node is opened read-only (ec_node.inspect_node): exact keys and bytes,
and every fragment checked against its checksum. A CLI pass killed before its
last progress line must leave every owed device owed; superblock copies may
differ only in the owed mask. Finally a background heal runs to the end and the
node must scrub and fsck clean. A second test kills `objfs scrub` in the same
way while it rewrites fragments overwritten with garbage on two devices, and a
third shows a clean close during the owed-mask write leaves both copies equal.

Set OBJFS_CRASH_SEED to repeat a run's choices (kill timing still varies).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import final

import trio
from ec_node import (
    DATA_ONLY_DEVICES,
    Node,
    NodeState,
    damage_fragments,
    fsck_owed,
    inspect_node,
    make_node,
    make_objects,
    node_args,
    objfs,
    read_fragment,
    superblock_copies,
)
from heal_child import HEALED_LINE, OPEN_LINE

from objfs.store import open_store
from objfs.store.device import BlockDevice, DeviceStatistics, WriteData, open_devices
from objfs.store.superblock import SUPERBLOCK_A_OFFSET_BYTES, decode_superblock

HEAL_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heal_child.py")
CHILD_TIMEOUT_S = 60.0
PROGRESS = re.compile(r"^(?:heal device \d+|scrub): (\d+)/(\d+) segments$")
LOST_DEVICES = (1, 4)  # a metadata device (WAL and checkpoint mirror) and a data-only one


@dataclass
class Run:
    """A command that was killed (or finished before the kill came)."""

    stdout: str
    stderr: str
    returncode: int  # -SIGKILL if killed
    triggered: bool  # the awaited line came (else the child exited, or hung)
    elapsed_s: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def pass_finished(self) -> bool:
        """The CLI pass printed its last progress line (done == total): from then on
        it may clear owed bits. Before it, it must not have."""
        for line in self.stdout.splitlines():
            match = PROGRESS.match(line)
            if match and match.group(1) == match.group(2):
                return True
        return False


Trigger = Callable[[str], bool]


def at_progress(fraction: float) -> Trigger:
    """Fires at the first progress line at least `fraction` of the way through."""

    def fires(line: str) -> bool:
        match = PROGRESS.match(line)
        return match is not None and int(match.group(1)) >= fraction * int(match.group(2))

    return fires


def at_line(text: str) -> Trigger:
    return lambda line: text in line


def run_and_kill(argv: list[str], trigger: Trigger, delay_s: float, stderr_path: str) -> Run:
    """Start `argv`, wait for a stdout line that `trigger` accepts, wait `delay_s`, SIGKILL."""
    with open(stderr_path, "w") as stderr:
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True
        )
    watchdog = threading.Timer(CHILD_TIMEOUT_S, child.kill)  # a hung child fails the test
    watchdog.start()
    lines = []
    triggered = False
    started = time.monotonic()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            if trigger(line.rstrip("\n")):
                triggered = True
                time.sleep(delay_s)
                break
    finally:
        child.send_signal(signal.SIGKILL)
        assert child.stdout is not None
        lines.append(child.stdout.read())
        child.wait()
        watchdog.cancel()
    elapsed_s = time.monotonic() - started
    with open(stderr_path) as file:
        stderr_text = file.read()[-4000:]
    run = Run("".join(lines), stderr_text, child.returncode, triggered, elapsed_s)
    assert triggered or not run.killed, f"{argv[-1]}: no trigger line in time:\n{run.stdout}"
    return run


def objfs_argv(node: Node, *args: str) -> list[str]:
    return [sys.executable, "-m", "objfs", *node_args(node), *args]


def check_after_kill(
    node: Node, objects: dict[str, bytes], owed_before: set[int], *, owed_must_stay: bool
) -> NodeState:
    """Every object intact; owed as fsck says, and kept if `owed_must_stay`; every
    device not owed holds every fragment intact; superblock copies differ at most
    in the owed mask (a kill between writing copy A and copy B)."""
    state = inspect_node(node, objects)
    owed = fsck_owed(node)
    assert owed == state.owed, f"fsck says owed {owed}, the open store {state.owed}"
    if owed_must_stay:
        assert owed_before <= set(owed), (
            f"owed {sorted(owed_before)} before, {list(owed)} after a heal killed before it "
            "finished"
        )
    for device_index, damaged in state.damaged.items():
        if device_index not in owed:
            assert damaged == 0, (
                f"device {device_index} is not owed but {damaged} of its fragments are damaged"
            )
    for device_index, (copy_a, copy_b) in superblock_copies(node).items():
        assert copy_a is not None and copy_b is not None, f"device {device_index}: a bad copy"
        assert replace(copy_a, owed_devices=0) == replace(copy_b, owed_devices=0), (
            f"device {device_index}: superblock copies differ in more than the owed mask"
        )
    return state


def cycle_plan(node: Node, rng: random.Random) -> list[tuple[str, list[str], Trigger, float]]:
    """(name, argv, trigger, delay) for each kill cycle, in order."""

    def cli_trigger(opening_line: str | None) -> tuple[Trigger, float]:
        if opening_line is not None and rng.random() < 0.25:
            return at_line(opening_line), rng.uniform(0.0, 0.3)  # open, checkpoints, early heal
        return at_progress(rng.uniform(0.0, 0.6)), rng.uniform(0.0, 0.15)

    heal_child = [sys.executable, HEAL_CHILD, node.config_path, node.data_dir]
    plan = []
    for name, args in (
        ("device replace 1", ["device", "replace", "1"]),
        ("scrub", ["scrub"]),
        ("scrub", ["scrub"]),
        ("device replace 4", ["device", "replace", "4"]),
        ("scrub --rate 100M", ["scrub", "--rate", "100M"]),
    ):
        opening = "healing onto it" if name.startswith("device") else None
        trigger, delay_s = cli_trigger(opening)
        plan.append((name, objfs_argv(node, *args), trigger, delay_s))
    for _ in range(2):  # the store's own background heal, at the default 64 MiB/s
        plan.append(("background heal", heal_child, at_line(OPEN_LINE), rng.uniform(0.0, 0.8)))
    return plan


def test_kill9_during_heal_loses_nothing_and_the_heal_resumes(disk_dir: str) -> None:
    """Killing `device replace`, `scrub` and the background heal mid-heal, cycle after
    cycle, keeps every object byte-identical and the device owed until a heal
    finishes; a background heal then finishes and the node scrubs and fscks clean."""
    seed = int(os.environ.get("OBJFS_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"seed {seed}")
    objects = make_objects(seed, 100)
    node = make_node(disk_dir, objects)
    for device_index in LOST_DEVICES:
        os.unlink(node.device_path(device_index))
    status = objfs(*node_args(node), "status")
    assert status.returncode == 0, status.stderr
    assert "health:     DEGRADED; down [1, 4], owed [1, 4]," in status.stdout
    owed = set(fsck_owed(node))
    assert owed == {1, 4}
    mid_heal = 0
    for cycle, (name, argv, trigger, delay_s) in enumerate(cycle_plan(node, rng)):
        started = time.monotonic()
        try:
            run = run_and_kill(argv, trigger, delay_s, os.path.join(disk_dir, "child.err"))
            assert run.killed or run.returncode in (0, 1), (
                f"{name} failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"
            )
            if name.startswith("device"):
                assert "healing onto it" in run.stdout, run.stdout
            background = name == "background heal"  # it may persist just before the kill
            state = check_after_kill(
                node, objects, owed, owed_must_stay=not background and not run.pass_finished
            )
        except BaseException as exc:
            exc.add_note(f"seed {seed}, cycle {cycle} ({name}, delay {delay_s:.2f} s)")
            raise
        finished = run.pass_finished or HEALED_LINE in run.stdout.splitlines()
        mid_heal += run.killed and not finished
        print(
            f"cycle {cycle}: {name}: {'killed' if run.killed else 'exited'} after "
            f"{run.elapsed_s:.2f} s, {'after' if finished else 'during'} the pass; owed "
            f"{sorted(owed)} -> {list(state.owed)}, damaged {state.damaged} "
            f"({time.monotonic() - started:.1f} s)"
        )
        owed = set(state.owed)
    assert mid_heal >= 3, f"only {mid_heal} kills landed in the middle of a heal pass"
    started = time.monotonic()
    healed = subprocess.run(
        [sys.executable, HEAL_CHILD, node.config_path, node.data_dir],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S + 30,
    )
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert HEALED_LINE in healed.stdout.splitlines()
    print(f"background heal to the end: {time.monotonic() - started:.1f} s")
    scrubbed = objfs(*node_args(node), "scrub")
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr
    assert "damaged 0, repaired 0, skipped on down devices 0" in scrubbed.stdout
    assert scrubbed.stdout.rstrip().endswith("clean: full redundancy")
    checked = objfs(*node_args(node), "fsck", "--verify-data")
    if checked.returncode != 0:
        # The one crash leftover the design allows (docs/concurrency.md, crash table:
        # "during the owed-mask write"): copies A and B of superblocks differ in the
        # mask, checked above to differ in nothing else. Opening keeps them; repair
        # rewrites copy B from A.
        problems = [line for line in checked.stdout.splitlines() if line.startswith("BAD")]
        assert all("one copy is damaged or differs" in line for line in problems), checked.stdout
        print(f"a kill left {len(problems)} superblock copy pairs apart: fsck --repair")
        assert objfs(*node_args(node), "fsck", "--repair").returncode == 0
        checked = objfs(*node_args(node), "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout
    assert f"fsck: clean; {len(objects)} keys" in checked.stdout
    status = objfs(*node_args(node), "status")
    assert "health:     healthy; down [], owed []," in status.stdout
    state = inspect_node(node, objects)
    assert state.owed == () and state.down == ()
    assert state.damaged == dict.fromkeys(range(6), 0)


def test_kill9_during_scrub_repairs_loses_nothing_and_a_rerun_finishes_clean(
    disk_dir: str,
) -> None:
    """Killing `objfs scrub` while it rewrites garbage-damaged fragments keeps every
    object byte-identical and never adds damage; a rerun repairs the rest, putting
    back each fragment's original bytes."""
    seed = int(os.environ.get("OBJFS_CRASH_SEED", random.randrange(1 << 30))) + 1
    rng = random.Random(seed)
    print(f"seed {seed}")
    objects = make_objects(seed, 80)
    node = make_node(disk_dir, objects)
    damaged_devices = {DATA_ONLY_DEVICES[0], DATA_ONLY_DEVICES[2]}  # two: any segment can heal
    originals = damage_fragments(node, damaged_devices, rng, share=0.5)
    state = inspect_node(node, objects)
    assert state.damaged_total == len(originals) > 0
    damaged = state.damaged_total
    mid_pass = 0
    for cycle in range(4):
        fraction, delay_s = rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.1)
        args = ["scrub", "--rate", "100M"] if cycle % 2 else ["scrub"]
        try:
            run = run_and_kill(
                objfs_argv(node, *args),
                at_progress(fraction),
                delay_s,
                os.path.join(disk_dir, "child.err"),
            )
            assert run.killed or run.returncode == 0, run.stdout + run.stderr
            state = inspect_node(node, objects)
            assert set(state.damaged) == set(range(6)) and state.owed == ()
            outside = {i: n for i, n in state.damaged.items() if i not in damaged_devices}
            assert not any(outside.values()), f"damage appeared elsewhere: {outside}"
            assert state.damaged_total <= damaged, (
                f"{state.damaged_total} fragments damaged after the kill, {damaged} before"
            )
        except BaseException as exc:
            exc.add_note(f"seed {seed}, cycle {cycle} (at {fraction:.2f}, +{delay_s:.2f} s)")
            raise
        mid_pass += run.killed and not run.pass_finished
        print(
            f"cycle {cycle}: {' '.join(args)} killed at {fraction:.2f}: damaged {damaged} -> "
            f"{state.damaged_total}"
        )
        damaged = state.damaged_total
    assert mid_pass >= 2, f"only {mid_pass} kills landed in the middle of a scrub pass"
    scrubbed = objfs(*node_args(node), "scrub")
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr
    assert f"damaged {damaged}, repaired {damaged}, skipped on down devices 0" in scrubbed.stdout
    assert scrubbed.stdout.rstrip().endswith("clean: full redundancy")
    for (device_index, offset_bytes), original in originals.items():
        assert read_fragment(node, device_index, offset_bytes, len(original)) == original
    checked = objfs(*node_args(node), "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout
    assert "fsck: clean" in checked.stdout
    assert inspect_node(node, objects).damaged_total == 0


@final
class GatedDevice:
    """A device whose write of superblock copy A with an empty owed mask (a heal's
    last step) waits, shielded like a real write in its thread, until released:
    it holds the owed-mask write open across a close, deterministically."""

    def __init__(self, inner: BlockDevice) -> None:
        self.inner = inner
        self.path = inner.path
        self.size_bytes = inner.size_bytes
        self.writing = trio.Event()  # the gated write has begun
        self.release = trio.Event()

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return await self.inner.read(offset_bytes, length_bytes)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.inner.read_many(requests)

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await self.inner.write(offset_bytes, data)

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        gated = any(
            offset_bytes == SUPERBLOCK_A_OFFSET_BYTES
            and isinstance(data, bytes)
            and decode_superblock(data, path=self.path).owed_devices == 0
            for offset_bytes, data in writes
        )
        if not gated:
            await self.inner.write_many(writes, flush=flush)
            return
        self.writing.set()
        with trio.CancelScope(shield=True):  # a write in its thread runs to the end
            await self.release.wait()
            await self.inner.write_many(writes, flush=flush)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statistics(self) -> DeviceStatistics:
        return self.inner.statistics()


def test_closing_the_store_during_a_heals_owed_mask_write_keeps_superblock_copies_equal(
    disk_dir: str,
) -> None:
    """A clean close (say SIGTERM to `objfs serve`) while a background heal writes
    the cleared owed mask must not leave superblock copies A and B apart: fsck calls
    that a problem, and no later open mends it."""
    objects = make_objects(7, 16)
    node = make_node(disk_dir, objects)
    aside = node.device_path(5) + ".aside"
    os.rename(node.device_path(5), aside)
    status = objfs(*node_args(node), "status")  # degraded: persists owed [5]
    assert "owed [5]" in status.stdout, status.stdout
    os.rename(aside, node.device_path(5))

    async def close_during_the_owed_mask_write() -> None:
        devices = await open_devices([node.device_path(i) for i in range(6)])
        gated = GatedDevice(devices[0])
        try:
            async with (
                trio.open_nursery() as nursery,
                open_store(node.store_config(), devices=[gated, *devices[1:]]),
            ):
                await gated.writing.wait()  # the background heal of device 5 is done

                async def release_once_closing() -> None:
                    await trio.sleep(0.5)  # the store's close has begun by then
                    gated.release.set()

                nursery.start_soon(release_once_closing)
        finally:
            for device in devices:
                await device.aclose()

    trio.run(close_during_the_owed_mask_write)
    copies = superblock_copies(node)
    assert all(a is not None and a.owed_devices == 0 for a, _ in copies.values())
    assert all(a == b for a, b in copies.values()), {
        i: (a.owed_devices if a else None, b.owed_devices if b else None)
        for i, (a, b) in copies.items()
    }
    checked = objfs(*node_args(node), "fsck")
    assert checked.returncode == 0, checked.stdout
