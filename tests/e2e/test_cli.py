"""The `objfs` command as a user runs it: format, serve --once, status, fsck, mistakes.

Method: run `python -m objfs` in a subprocess on real device files; user mistakes
must print one line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys


def objfs(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "objfs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_format_serve_status_fsck_on_the_embedded_default(disk_dir: str) -> None:
    data = os.path.join(disk_dir, "data")
    formatted = objfs("--data", data, "format", "--device-count", "2", "--device-size", "64M")
    assert formatted.returncode == 0, formatted.stderr
    assert "formatted 2 device(s)" in formatted.stdout
    served = objfs("--data", data, "serve", "--once")
    assert served.returncode == 0, served.stderr
    assert "buckets:    0" in served.stdout
    status = objfs("status", "--data", data)  # options after the command work too
    assert "objects:    0" in status.stdout
    checked = objfs("--data", data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "fsck: clean" in checked.stdout
    again = objfs("--data", data, "format")
    assert again.returncode == 2 and "already has devices" in again.stderr
    assert "Traceback" not in again.stderr
    shutil.rmtree(data)


def test_serve_formats_the_data_directory_on_first_start(disk_dir: str) -> None:
    data = os.path.join(disk_dir, "fresh")
    served = objfs("--data", data, "serve", "--once")
    assert served.returncode == 0, served.stderr
    assert "creating the embedded default" in served.stdout
    assert sorted(os.listdir(os.path.join(data, "devices"))) == [f"dev{i}.img" for i in range(6)]
    shutil.rmtree(data)


def test_user_mistakes_print_one_line_and_no_traceback(disk_dir: str) -> None:
    missing = objfs("--data", os.path.join(disk_dir, "none"), "status")
    assert missing.returncode == 2
    assert "run `objfs format` first" in missing.stderr
    config = os.path.join(disk_dir, "bad.toml")
    with open(config, "w") as file:
        file.write("[store]\nfragment_size_bytes = 3\n")
    bad = objfs("--config", config, "status")
    assert bad.returncode == 2
    assert "store.fragment_size_bytes" in bad.stderr
    for result in (missing, bad):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_format_refuses_a_device_that_holds_objfs_data(disk_dir: str) -> None:
    path = os.path.join(disk_dir, "dev.img")
    with open(path, "wb") as file:
        file.truncate(64 * 1024 * 1024)
    assert objfs("format", path).returncode == 0
    again = objfs("format", path)
    assert again.returncode == 2 and "already holds objfs data" in again.stderr
    assert objfs("format", "--force", path).returncode == 0
    os.unlink(path)


def test_fsck_reports_a_damaged_superblock_and_repair_mends_it(disk_dir: str) -> None:
    data = os.path.join(disk_dir, "data")
    assert objfs("--data", data, "format", "--device-size", "64M").returncode == 0
    device = os.path.join(data, "devices", "dev0.img")
    with open(device, "r+b") as file:  # flip a byte inside superblock copy A
        file.seek(20)
        byte = file.read(1)
        file.seek(20)
        file.write(bytes([byte[0] ^ 0xFF]))
    checked = objfs("--data", data, "fsck")
    assert checked.returncode == 1
    assert "BAD superblock" in checked.stdout
    repaired = objfs("--data", data, "fsck", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "fsck: clean" in repaired.stdout
    assert objfs("--data", data, "fsck", "--verify-data").returncode == 0


def test_user_create_list_delete_and_mistakes(disk_dir: str) -> None:
    """`objfs user` keeps the node's S3 users in DATA/users.json (mode 0600): root is
    generated on first use and shown once; a user made with given keys lists with
    them; a duplicate name, root's deletion or a bad key are one-line errors."""
    data = os.path.join(disk_dir, "users")
    os.makedirs(data)
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("OBJFS_ROOT_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "objfs", "--data", data, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_free,
        )

    made = run(
        "user", "create", "alice", "--access-key", "ALICEKEY01", "--secret-key", "alice-secret-123"
    )
    assert made.returncode == 0, made.stderr
    assert "generated root" in made.stdout and "access key: ALICEKEY01" in made.stdout
    assert os.stat(os.path.join(data, "users.json")).st_mode & 0o777 == 0o600
    listed = run("user", "list")
    names = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert names == ["alice", "root"] and "ALICEKEY01" in listed.stdout
    assert "generated root" not in listed.stdout  # shown once
    mistakes = [
        (("user", "create", "alice"), "exists"),
        (("user", "delete", "root"), "root cannot be deleted"),
        (("user", "create", "bob", "--access-key", "k!"), "access key"),
        (("user", "delete", "nobody"), "no user"),
    ]
    # At once (each refused command changes nothing, so none depends on another):
    # every run spends a second starting Python.
    with concurrent.futures.ThreadPoolExecutor(len(mistakes)) as pool:
        results = list(pool.map(lambda mistake: run(*mistake[0]), mistakes))
    for (_, words), failed in zip(mistakes, results, strict=True):
        assert failed.returncode == 2 and words in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert run("user", "delete", "alice").returncode == 0
    assert [line.split("\t")[0] for line in run("user", "list").stdout.splitlines()] == ["root"]
