"""Real S3 clients against a real node: aws-cli, s3cmd, rclone, minio-py and boto3, end to end.

Method: one node per module (s3_node.py; 3 x 1 GiB device files, so a 200 MiB
object fits beside the rest). aws-cli and s3cmd run as subprocesses of the
venv with their own config files (path-style addressing, SigV4, no retries
where the tool allows it), rclone (a Debian package, scripts/setup.sh) as a
subprocess with its own config file; minio-py and boto3 run in-process. Every scenario
checks the bytes that come back (SHA-256 of whole files, slices for ranges),
the ETags (MD5, or MD5 of the part MD5s and "-N" for multipart uploads), the
sizes and the listings, not only that the tool exited 0. Any ERROR logged by
objfs during a test fails it: a 5xx a client retried past still counts.

The 2,000-key bucket that the listing tests read is filled once, by minio-py
from a thread pool, and listed by minio-py and by boto3 (both checksum modes).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from base64 import b64encode
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
import urllib3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from minio import Minio
from minio.commonconfig import ComposeSource, CopySource
from minio.deleteobjects import DeleteObject
from s3_node import ROOT_KEY, ROOT_SECRET, WORK_DIR, Node, start_node, stop_node

KiB = 1024
MiB = 1024 * KiB
BIN = Path(sys.executable).parent
AWS = str(BIN / "aws")
S3CMD = str(BIN / "s3cmd")
RCLONE = shutil.which("rclone") or "rclone"
TOOL_TIMEOUT_S = 120
LISTING_KEY_COUNT = 2000


# -- the node and the checks every test gets -------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """This module's node (overrides conftest's): larger devices for 60-200 MiB objects."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="clients-", dir=WORK_DIR))
    running = start_node(str(path / "data"), device_size_bytes=1024 * MiB)
    try:
        yield running
    finally:
        stop_node(running)
        shutil.rmtree(path, ignore_errors=True)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.fixture(autouse=True)
def no_server_errors() -> Iterator[None]:
    """objfs logs every 5xx and every unexpected exception at ERROR; none may happen."""
    collect = _Collect()
    logger = logging.getLogger("objfs")
    logger.addHandler(collect)
    try:
        yield
    finally:
        logger.removeHandler(collect)
    assert not collect.messages, "objfs logged errors:\n" + "\n".join(collect.messages)


# -- files and digests ----------------------------------------------------------------


def write_random_file(path: Path, size_bytes: int) -> None:
    with open(path, "wb") as file:
        remaining = size_bytes
        while remaining:
            block = os.urandom(min(remaining, 8 * MiB))
            file.write(block)
            remaining -= len(block)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def s3_etag(path: Path, *, part_size_bytes: int | None) -> str:
    """The ETag S3 gives `path`'s bytes: MD5, or MD5 of part MD5s and "-N" when
    uploaded in parts of `part_size_bytes`."""
    with open(path, "rb") as file:
        if part_size_bytes is None:
            return hashlib.file_digest(file, "md5").hexdigest()
        part_digests = []
        while part := file.read(part_size_bytes):
            part_digests.append(hashlib.md5(part).digest())
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def tree_of(root: Path) -> dict[str, str]:
    """Relative path (with "/") -> SHA-256 of every file under `root`."""
    return {
        path.relative_to(root).as_posix(): sha256_of(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_tree(root: Path, file_count: int) -> None:
    """A directory tree of `file_count` files: nested directories, an empty file,
    names with spaces and non-ASCII letters, sizes up to 300 kB."""
    rng = random.Random(20240611)
    directories = ["", "docs", "docs/deep", "docs/deep/er", "img", "img/raw", "café"]
    for index in range(file_count):
        directory = root / directories[index % len(directories)]
        directory.mkdir(parents=True, exist_ok=True)
        name = f"file {index:02d}.bin" if index % 5 == 0 else f"f{index:02d}.dat"
        size = 0 if index == 3 else rng.randrange(1, 300_000)
        (directory / name).write_bytes(rng.randbytes(size))


# -- aws-cli --------------------------------------------------------------------------


class AwsCli:
    """`.venv/bin/aws` with the root's keys, path-style addressing and no retries."""

    def __init__(self, node: Node, home: Path) -> None:
        self.endpoint = node.endpoint
        config = home / "config"
        config.write_text(
            "[default]\nmax_attempts = 1\ns3 =\n    addressing_style = path\n", encoding="utf-8"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            HOME=str(home),
            AWS_ACCESS_KEY_ID=ROOT_KEY,
            AWS_SECRET_ACCESS_KEY=ROOT_SECRET,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_DEFAULT_OUTPUT="json",
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
            AWS_EC2_METADATA_DISABLED="true",
        )

    def __call__(self, *args: str | Path) -> str:
        """Run `aws ARGS`; its stdout. Fails the test (with stderr) on a non-zero exit."""
        return self.run(*args).decode()

    def run(self, *args: str | Path, stdin: bytes | None = None) -> bytes:
        """Run `aws ARGS` with `stdin`; its stdout as bytes."""
        command = [AWS, "--endpoint-url", self.endpoint, *map(str, args)]
        done = subprocess.run(
            command, env=self.env, input=stdin, capture_output=True, timeout=TOOL_TIMEOUT_S
        )
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr!r}"
        return done.stdout

    def api(self, *args: str | Path) -> Any:
        """`aws s3api ARGS` and its JSON answer ({} when it prints nothing)."""
        out = self("s3api", *args)
        return json.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def aws(node: Node, tmp_path_factory: pytest.TempPathFactory) -> AwsCli:
    return AwsCli(node, tmp_path_factory.mktemp("aws-home"))


def parse_s3_ls(out: str) -> tuple[list[str], dict[str, int]]:
    """`aws s3 ls` output: the PRE lines' prefixes, and key -> size of the rest."""
    prefixes, objects = [], {}
    for line in out.splitlines():
        if match := re.fullmatch(r"\s+PRE (.+)", line):
            prefixes.append(match.group(1))
        elif match := re.fullmatch(r"\S+ \S+\s+(\d+) (.+)", line):
            objects[match.group(2)] = int(match.group(1))
        else:
            raise AssertionError(f"unexpected `aws s3 ls` line {line!r}")
    return prefixes, objects


def test_aws_cli_cp_up_and_down_of_1kib_5mib_and_60mib(
    aws: AwsCli, s3: Any, tmp_path: Path
) -> None:
    """60 MiB is over the CLI's 8 MiB multipart threshold: 8 parts of 8 MiB (the last 4)."""
    assert aws("s3", "mb", "s3://cli-cp").strip() == "make_bucket: cli-cp"
    assert "cli-cp" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    for size in (1 * KiB, 5 * MiB, 60 * MiB):
        source, back = tmp_path / f"up-{size}", tmp_path / f"down-{size}"
        write_random_file(source, size)
        aws("s3", "cp", "--no-progress", source, f"s3://cli-cp/obj-{size}")
        head = s3.head_object(Bucket="cli-cp", Key=f"obj-{size}")
        assert head["ContentLength"] == size
        part_size = 8 * MiB if size > 8 * MiB else None
        assert head["ETag"] == f'"{s3_etag(source, part_size_bytes=part_size)}"'
        aws("s3", "cp", "--no-progress", f"s3://cli-cp/obj-{size}", back)
        assert sha256_of(back) == sha256_of(source), size
    # A server-side copy: over 8 MiB the CLI copies in 8 MiB UploadPartCopy ranges.
    aws("s3", "cp", "--no-progress", f"s3://cli-cp/obj-{60 * MiB}", "s3://cli-cp/copy/60")
    copy_head = s3.head_object(Bucket="cli-cp", Key="copy/60")
    assert copy_head["ETag"] == head["ETag"] and copy_head["ContentLength"] == 60 * MiB
    aws("s3", "cp", "--no-progress", "s3://cli-cp/copy/60", tmp_path / "copy-60")
    assert sha256_of(tmp_path / "copy-60") == sha256_of(tmp_path / f"up-{60 * MiB}")
    # Content-Type guessed from the name; headers and metadata given on the command line.
    page = tmp_path / "page.html"
    page.write_bytes(b"<html>objfs</html>")
    aws.run(
        *("s3", "cp", "--no-progress", page, "s3://cli-cp/page.html"),
        *("--cache-control", "max-age=60", "--metadata", "origin=cli,n=1"),
    )
    page_head = s3.head_object(Bucket="cli-cp", Key="page.html")
    assert page_head["ContentType"] == "text/html"
    assert page_head["CacheControl"] == "max-age=60"
    assert page_head["Metadata"] == {"origin": "cli", "n": "1"}
    # A stream of unknown size from stdin (multipart, 8 MiB parts), and back to stdout.
    piped = os.urandom(20 * MiB + 1)
    aws.run("s3", "cp", "--no-progress", "-", "s3://cli-cp/piped", stdin=piped)
    head = s3.head_object(Bucket="cli-cp", Key="piped")
    assert head["ContentLength"] == len(piped) and head["ETag"].endswith('-3"')
    assert aws.run("s3", "cp", "--no-progress", "s3://cli-cp/piped", "-") == piped
    _, objects = parse_s3_ls(aws("s3", "ls", "s3://cli-cp/"))
    sizes = {f"obj-{size}": size for size in (1 * KiB, 5 * MiB, 60 * MiB)}
    assert objects == {**sizes, "piped": len(piped), "page.html": page.stat().st_size}
    aws("s3", "rm", "--recursive", "--only-show-errors", "s3://cli-cp/")
    aws("s3", "rb", "s3://cli-cp")
    assert "cli-cp" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_aws_cli_sync_both_ways_edit_resync_ls_and_rm(aws: AwsCli, tmp_path: Path) -> None:
    local, down = tmp_path / "local", tmp_path / "down"
    make_tree(local, 30)
    expected = tree_of(local)
    assert len(expected) == 30
    aws("s3", "mb", "s3://cli-sync")
    uploaded = aws("s3", "sync", "--no-progress", local, "s3://cli-sync/tree/")
    assert uploaded.count("upload: ") == 30
    _, listed = parse_s3_ls(aws("s3", "ls", "--recursive", "s3://cli-sync/"))
    assert listed == {f"tree/{name}": (local / name).stat().st_size for name in expected}
    downloaded = aws("s3", "sync", "--no-progress", "s3://cli-sync/tree/", down)
    assert downloaded.count("download: ") == 30
    assert tree_of(down) == expected
    assert aws("s3", "sync", "--no-progress", local, "s3://cli-sync/tree/") == ""  # nothing new
    assert aws("s3", "sync", "--no-progress", "s3://cli-sync/tree/", down) == ""

    # An edit (new size), a new file and a deleted one, then both ways again.
    with open(local / "docs" / "f01.dat", "ab") as file:
        file.write(b"appended by the edit")
    (local / "img" / "raw" / "new.raw").write_bytes(os.urandom(77_777))
    (local / "f07.dat").unlink()
    changed = aws("s3", "sync", "--no-progress", "--delete", local, "s3://cli-sync/tree/")
    assert sorted(line.split(":")[0] for line in changed.splitlines()) == [
        "delete",
        "upload",
        "upload",
    ]
    assert "s3://cli-sync/tree/f07.dat" in changed
    changed = aws("s3", "sync", "--no-progress", "--delete", "s3://cli-sync/tree/", down)
    assert sorted(line.split(":")[0] for line in changed.splitlines()) == [
        "delete",
        "download",
        "download",
    ]
    assert tree_of(down) == tree_of(local) != expected

    # Listing by prefix: one level at a time, and a prefix that is not a whole name.
    prefixes, objects = parse_s3_ls(aws("s3", "ls", "s3://cli-sync/tree/"))
    assert prefixes == ["café/", "docs/", "img/"]
    assert sorted(objects) == sorted(n for n in tree_of(local) if "/" not in n)
    prefixes, objects = parse_s3_ls(aws("s3", "ls", "s3://cli-sync/tree/docs/"))
    assert prefixes == ["deep/"] and sorted(objects) == sorted(
        n.removeprefix("docs/") for n in tree_of(local) if n.count("/") == 1 and "docs/" in n
    )
    prefixes, objects = parse_s3_ls(aws("s3", "ls", "s3://cli-sync/tree/im"))
    assert prefixes == ["img/"] and objects == {}
    _, objects = parse_s3_ls(aws("s3", "ls", "--recursive", "s3://cli-sync/tree/docs/deep"))
    assert sorted(objects) == sorted(f"tree/{n}" for n in tree_of(local) if "docs/deep" in n)

    # rm --recursive of one prefix leaves the rest; of everything leaves nothing.
    removed = aws("s3", "rm", "--recursive", "s3://cli-sync/tree/img/")
    assert removed.count("delete: ") == sum(n.startswith("img/") for n in tree_of(local))
    _, objects = parse_s3_ls(aws("s3", "ls", "--recursive", "s3://cli-sync/"))
    assert sorted(objects) == sorted(
        f"tree/{n}" for n in tree_of(local) if not n.startswith("img/")
    )
    aws("s3", "rm", "--recursive", "--only-show-errors", "s3://cli-sync/")
    assert aws("s3", "ls", "--recursive", "s3://cli-sync/") == ""
    aws("s3", "rb", "s3://cli-sync")


def test_aws_s3api_multipart_upload_by_hand(aws: AwsCli, tmp_path: Path) -> None:
    aws.api("create-bucket", "--bucket", "cli-mpu")
    upload_id = aws.api(
        "create-multipart-upload", "--bucket", "cli-mpu", "--key", "hand/made", "--metadata", "k=v"
    )["UploadId"]
    sizes = [5 * MiB, 5 * MiB + 1, 1234]
    parts = []
    for number, size in enumerate(sizes, 1):
        part = tmp_path / f"part{number}"
        write_random_file(part, size)
        etag = aws.api(
            "upload-part",
            *("--bucket", "cli-mpu", "--key", "hand/made", "--upload-id", upload_id),
            *("--part-number", str(number), "--body", part),
        )["ETag"]
        assert etag == f'"{s3_etag(part, part_size_bytes=None)}"'
        parts.append({"PartNumber": number, "ETag": etag})
    listed = aws.api(
        "list-parts", "--bucket", "cli-mpu", "--key", "hand/made", "--upload-id", upload_id
    )
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == list(enumerate(sizes, 1))
    done = aws.api(
        "complete-multipart-upload",
        *("--bucket", "cli-mpu", "--key", "hand/made", "--upload-id", upload_id),
        *("--multipart-upload", json.dumps({"Parts": parts})),
    )
    whole = tmp_path / "whole"
    with open(whole, "wb") as file:
        for number in range(1, len(sizes) + 1):
            file.write((tmp_path / f"part{number}").read_bytes())
    part_md5s = b"".join(
        hashlib.md5((tmp_path / f"part{n}").read_bytes()).digest() for n in (1, 2, 3)
    )
    assert done["ETag"] == f'"{hashlib.md5(part_md5s).hexdigest()}-3"'
    assert done["Key"] == "hand/made" and done["Bucket"] == "cli-mpu"
    got = aws.api("get-object", "--bucket", "cli-mpu", "--key", "hand/made", tmp_path / "got")
    assert got["ContentLength"] == sum(sizes) and got["Metadata"] == {"k": "v"}
    assert sha256_of(tmp_path / "got") == sha256_of(whole)
    assert aws.api("list-multipart-uploads", "--bucket", "cli-mpu").get("Uploads", []) == []


def test_aws_s3api_versioning_and_list_object_versions(aws: AwsCli, tmp_path: Path) -> None:
    aws.api("create-bucket", "--bucket", "cli-versions")
    aws.api(
        "put-bucket-versioning",
        *("--bucket", "cli-versions", "--versioning-configuration", "Status=Enabled"),
    )
    assert aws.api("get-bucket-versioning", "--bucket", "cli-versions")["Status"] == "Enabled"
    bodies = [tmp_path / "v1", tmp_path / "v2"]
    bodies[0].write_bytes(b"first version\n" * 1000)
    bodies[1].write_bytes(os.urandom(70_000))
    version_ids = [
        aws.api("put-object", "--bucket", "cli-versions", "--key", "doc", "--body", body)[
            "VersionId"
        ]
        for body in bodies
    ]
    assert len(set(version_ids)) == 2 and "null" not in version_ids
    listing = aws.api("list-object-versions", "--bucket", "cli-versions")
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in listing["Versions"]] == [
        ("doc", version_ids[1], True, 70_000),
        ("doc", version_ids[0], False, 14_000),
    ]
    assert listing["Versions"][1]["ETag"] == f'"{s3_etag(bodies[0], part_size_bytes=None)}"'
    for version_id, body in zip(version_ids, bodies, strict=True):
        out = tmp_path / f"got-{version_id}"
        aws.api(
            "get-object",
            *("--bucket", "cli-versions", "--key", "doc", "--version-id", version_id, out),
        )
        assert out.read_bytes() == body.read_bytes()
    marker = aws.api("delete-object", "--bucket", "cli-versions", "--key", "doc")
    assert marker["DeleteMarker"] is True
    listing = aws.api("list-object-versions", "--bucket", "cli-versions")
    assert [m["VersionId"] for m in listing["DeleteMarkers"]] == [marker["VersionId"]]
    assert [v["IsLatest"] for v in listing["Versions"]] == [False, False]


def test_aws_s3api_copy_head_and_range_get(aws: AwsCli, tmp_path: Path) -> None:
    aws.api("create-bucket", "--bucket", "cli-copy")
    source = tmp_path / "source"
    write_random_file(source, 3 * MiB + 5)
    data = source.read_bytes()
    put = aws.api("put-object", "--bucket", "cli-copy", "--key", "src", "--body", source)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    copied = aws.api(
        "copy-object", "--bucket", "cli-copy", "--key", "dir/dst", "--copy-source", "cli-copy/src"
    )
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    head = aws.api("head-object", "--bucket", "cli-copy", "--key", "dir/dst")
    assert head["ContentLength"] == len(data) and head["ETag"] == put["ETag"]
    head = aws.api(
        "head-object", "--bucket", "cli-copy", "--key", "dir/dst", "--range", "bytes=10-19"
    )
    assert head["ContentLength"] == 10 and head["ContentRange"] == f"bytes 10-19/{len(data)}"
    for header, expected in [
        ("bytes=0-0", data[:1]),
        ("bytes=1000-1999", data[1000:2000]),
        ("bytes=3145725-", data[3145725:]),
        ("bytes=-7", data[-7:]),
    ]:
        out = tmp_path / "range"
        got = aws.api(
            "get-object", "--bucket", "cli-copy", "--key", "dir/dst", "--range", header, out
        )
        assert out.read_bytes() == expected, header
        assert got["ContentLength"] == len(expected)
        assert got["ContentRange"].endswith(f"/{len(data)}")
    aws.api("get-object", "--bucket", "cli-copy", "--key", "dir/dst", tmp_path / "whole")
    assert (tmp_path / "whole").read_bytes() == data


# -- s3cmd ----------------------------------------------------------------------------


class S3Cmd:
    """`.venv/bin/s3cmd` with a generated config: path-style, plain HTTP, SigV4."""

    def __init__(self, node: Node, home: Path) -> None:
        host = node.endpoint.removeprefix("http://")
        self.config = home / "s3cfg"
        self.config.write_text(
            "[default]\n"
            f"access_key = {ROOT_KEY}\n"
            f"secret_key = {ROOT_SECRET}\n"
            f"host_base = {host}\n"
            f"host_bucket = {host}\n"
            "bucket_location = us-east-1\n"
            "use_https = False\n"
            "signature_v2 = False\n"
            "max_retries = 1\n",
            encoding="utf-8",
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env["HOME"] = str(home)

    def __call__(self, *args: str | Path) -> str:
        command = [S3CMD, "-c", str(self.config), "--no-progress", *map(str, args)]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
        )
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr}"
        assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr
        return done.stdout


def test_s3cmd_mb_put_get_ls_del_and_multipart(
    node: Node, s3: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    s3cmd = S3Cmd(node, tmp_path_factory.mktemp("s3cmd-home"))
    s3cmd("mb", "s3://cmd")
    assert "s3://cmd" in s3cmd("ls").split()
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    write_random_file(small, 1 * MiB + 3)
    write_random_file(big, 20 * MiB)
    s3cmd("put", small, "s3://cmd/dir/small.bin")
    s3cmd("put", "--multipart-chunk-size-mb=5", big, "s3://cmd/big.bin")
    big_head = s3.head_object(Bucket="cmd", Key="big.bin")
    assert big_head["ETag"] == f'"{s3_etag(big, part_size_bytes=5 * MiB)}"'
    assert big_head["ETag"].endswith('-4"') and big_head["ContentLength"] == 20 * MiB
    for source, key in [(small, "dir/small.bin"), (big, "big.bin")]:
        back = tmp_path / f"back-{source.name}"
        s3cmd("get", "--force", f"s3://cmd/{key}", back)
        assert s3_etag(back, part_size_bytes=None) == s3_etag(source, part_size_bytes=None)
        assert sha256_of(back) == sha256_of(source)
    listing = s3cmd("ls", "--list-md5", "s3://cmd/dir/")
    (line,) = listing.splitlines()
    assert line.split()[2:] == [
        str(1 * MiB + 3),
        s3_etag(small, part_size_bytes=None),
        "s3://cmd/dir/small.bin",
    ]
    top = [line.split()[-1] for line in s3cmd("ls", "s3://cmd").splitlines()]
    assert top == ["s3://cmd/dir/", "s3://cmd/big.bin"]
    s3cmd("cp", "s3://cmd/big.bin", "s3://cmd/copy.bin")
    s3cmd("get", "--force", "s3://cmd/copy.bin", tmp_path / "copy.bin")
    assert sha256_of(tmp_path / "copy.bin") == sha256_of(big)
    s3cmd("del", "s3://cmd/big.bin", "s3://cmd/copy.bin", "s3://cmd/dir/small.bin")
    assert s3cmd("ls", "--recursive", "s3://cmd") == ""

    # sync up and down (it compares MD5s with the listing's ETags), then a re-sync.
    local, down = tmp_path / "tree", tmp_path / "down"
    make_tree(local, 12)
    s3cmd("sync", f"{local}/", "s3://cmd/tree/")
    s3cmd("sync", "s3://cmd/tree/", f"{down}/")
    assert tree_of(down) == tree_of(local)
    (local / "docs" / "f01.dat").write_bytes(b"changed")
    s3cmd("sync", f"{local}/", "s3://cmd/tree/")
    s3cmd("sync", "s3://cmd/tree/", f"{down}/")
    assert tree_of(down) == tree_of(local)
    s3cmd("del", "--recursive", "--force", "s3://cmd/tree/")
    assert s3cmd("ls", "--recursive", "s3://cmd") == ""
    s3cmd("rb", "s3://cmd")
    assert "s3://cmd" not in s3cmd("ls").split()


# -- rclone ---------------------------------------------------------------------------


class Rclone:
    """`rclone` with a remote "o" on the node (provider Other, path-style), no
    retries, and 5 MiB cutoffs: files of 5 MiB or more go up as multipart
    uploads and are copied server-side with UploadPartCopy."""

    def __init__(self, node: Node, home: Path) -> None:
        self.config = home / "rclone.conf"
        self.config.write_text(
            "[o]\ntype = s3\nprovider = Other\n"
            f"access_key_id = {ROOT_KEY}\nsecret_access_key = {ROOT_SECRET}\n"
            f"endpoint = {node.endpoint}\nregion = us-east-1\nforce_path_style = true\n",
            encoding="utf-8",
        )
        # AWS_CA_BUNDLE makes rclone refuse to start ("unsupported transport").
        drop = ("AWS_", "RCLONE_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env["HOME"] = str(home)

    def __call__(self, *args: str | Path) -> str:
        command = [
            RCLONE,
            "--config",
            str(self.config),
            "--retries=1",
            "--low-level-retries=1",
            "--s3-upload-cutoff=5M",
            "--s3-chunk-size=5M",
            "--s3-copy-cutoff=5M",
            *map(str, args),
        ]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
        )
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr}"
        assert "ERROR" not in done.stderr, done.stderr
        return done.stdout

    def listing(self, remote: str) -> dict[str, dict[str, Any]]:
        """`rclone lsjson -R --hash` of `remote`: path -> entry, files only."""
        entries = json.loads(self("lsjson", "-R", "--hash", "--files-only", remote))
        return {entry["Path"]: entry for entry in entries}


def rclone_time_ns(text: str) -> int:
    """A modification time as `rclone lsjson` writes it (RFC 3339, UTC), in ns."""
    stamp, _, fraction = text.removesuffix("Z").partition(".")
    seconds = int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0"))


def test_rclone_copy_check_sync_server_side_copy_move_touch_and_purge(
    node: Node, s3: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rclone = Rclone(node, tmp_path_factory.mktemp("rclone-home"))
    local, down = tmp_path / "tree", tmp_path / "down"
    make_tree(local, 14)
    write_random_file(local / "big.bin", 23 * MiB)  # five parts of 5 MiB (the last 3 MiB)
    rclone("mkdir", "o:rcl")
    rclone("copy", local, "o:rcl/tree")
    rclone("check", local, "o:rcl/tree")  # sizes and MD5s, multipart object included
    assert s3.head_object(Bucket="rcl", Key="tree/big.bin")["ETag"] == (
        f'"{s3_etag(local / "big.bin", part_size_bytes=5 * MiB)}"'
    )
    listed = rclone.listing("o:rcl/tree")
    assert sorted(listed) == sorted(tree_of(local))
    for name, entry in listed.items():  # rclone's mtime metadata (float seconds: ~1 us)
        mtime_ns = (local / name).stat().st_mtime_ns
        assert abs(rclone_time_ns(entry["ModTime"]) - mtime_ns) < 1000, name
        assert entry["Hashes"]["md5"] == s3_etag(local / name, part_size_bytes=None), name

    # A change, a deletion and a new file, synced up; everything back down.
    (local / "docs" / "f01.dat").write_bytes(b"changed")
    (local / "docs" / "deep" / "f02.dat").unlink()
    (local / "new.txt").write_bytes(b"new")
    rclone("sync", local, "o:rcl/tree")
    rclone("copy", "o:rcl/tree", down)
    assert tree_of(down) == tree_of(local)

    # Server-side copy (multipart, by UploadPartCopy) and move; ranged reads.
    rclone("copyto", "o:rcl/tree/big.bin", "o:rcl/copy/big.bin")
    copied = s3.head_object(Bucket="rcl", Key="copy/big.bin")
    assert copied["ContentLength"] == 23 * MiB and copied["ETag"].endswith('-5"')
    rclone("copyto", "o:rcl/copy/big.bin", down / "copy.bin")
    assert sha256_of(down / "copy.bin") == sha256_of(local / "big.bin")
    rclone("moveto", "o:rcl/tree/new.txt", "o:rcl/moved/new.txt")
    assert rclone("cat", "o:rcl/moved/new.txt") == "new"
    assert "new.txt" not in rclone.listing("o:rcl/tree")
    data = (local / "big.bin").read_bytes()
    for offset, count in [(0, 10), (5 * MiB - 3, 7), (23 * MiB - 5, 5)]:
        command = [RCLONE, "--config", str(rclone.config), "cat", "o:rcl/tree/big.bin"]
        command += [f"--offset={offset}", f"--count={count}"]
        done = subprocess.run(command, env=rclone.env, capture_output=True, timeout=60)
        assert done.returncode == 0 and done.stdout == data[offset : offset + count], done.stderr

    # touch: a copy of the object onto itself with new metadata (REPLACE).
    rclone("touch", "-t", "2020-01-02T03:04:05", "o:rcl/tree/big.bin")
    touched = rclone.listing("o:rcl/tree")["big.bin"]
    assert touched["ModTime"].startswith("2020-01-02T03:04:05") and touched["Size"] == 23 * MiB
    (local / "new.txt").unlink()  # moved away above
    rclone("check", local, "o:rcl/tree")  # the bytes (MD5s) are as they were

    rclone("purge", "o:rcl")
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket="rcl")
    assert excinfo.value.response["Error"]["Code"] == "404"


# -- minio-py -------------------------------------------------------------------------


class NoSeekStream(io.RawIOBase):
    """`size_bytes` of deterministic bytes, readable only forwards (no seek, no len).

    Block i (1 MiB) is Random(seed, i)'s bytes, so the content does not depend on
    how the reader slices it."""

    def __init__(self, size_bytes: int, seed: int) -> None:
        self._size_bytes = size_bytes
        self._seed = seed
        self._offset_bytes = 0
        self._block = b""
        self._block_index = -1

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        block_index, within = divmod(self._offset_bytes, MiB)
        if block_index != self._block_index:
            self._block = random.Random(self._seed * 1_000_003 + block_index).randbytes(MiB)
            self._block_index = block_index
        count = min(len(buffer), MiB - within, self._size_bytes - self._offset_bytes)
        buffer[:count] = self._block[within : within + count]
        self._offset_bytes += count
        return count


def stream_bytes(size_bytes: int, seed: int) -> bytes:
    """What NoSeekStream(size_bytes, seed) produces."""
    stream = NoSeekStream(size_bytes, seed)
    return b"".join(iter(lambda: stream.read(3 * MiB + 17), b""))


@pytest.fixture(scope="module")
def minio(node: Node) -> Minio:
    return Minio(
        node.endpoint.removeprefix("http://"),
        access_key=ROOT_KEY,
        secret_key=ROOT_SECRET,
        secure=False,
    )


def test_minio_put_get_ranges_stat_files_and_remove(minio: Minio, tmp_path: Path) -> None:
    minio.make_bucket("mio")
    assert minio.bucket_exists("mio") and not minio.bucket_exists("mio-none")
    small = os.urandom(1 * KiB)
    result = minio.put_object(
        "mio", "small", io.BytesIO(small), len(small), metadata={"Color": "blue"}
    )
    assert result.etag == hashlib.md5(small).hexdigest()
    big = stream_bytes(30 * MiB, seed=1)
    result = minio.put_object(
        "mio", "big", cast(BinaryIO, NoSeekStream(30 * MiB, seed=1)), length=-1, part_size=5 * MiB
    )
    expected_etag = hashlib.md5(
        b"".join(hashlib.md5(big[i : i + 5 * MiB]).digest() for i in range(0, len(big), 5 * MiB))
    ).hexdigest()
    assert result.etag == f"{expected_etag}-6"
    for name, data in [("small", small), ("big", big)]:
        response = minio.get_object("mio", name)
        try:
            assert response.read() == data, name
        finally:
            response.close()
            response.release_conn()
    for offset, length in [(0, 1), (5 * MiB - 1, 2), (12_345_678, 3 * MiB), (30 * MiB - 10, 0)]:
        response = minio.get_object("mio", "big", offset=offset, length=length)
        try:
            end = offset + length if length else len(big)
            assert response.read() == big[offset:end], (offset, length)
            assert response.status == 206
        finally:
            response.close()
            response.release_conn()
    stat = minio.stat_object("mio", "small")
    assert stat.size == 1 * KiB and stat.etag == hashlib.md5(small).hexdigest()
    assert stat.metadata is not None and stat.metadata["x-amz-meta-color"] == "blue"
    assert minio.stat_object("mio", "big").size == 30 * MiB

    source = tmp_path / "source"
    write_random_file(source, 7 * MiB + 1)
    minio.fput_object("mio", "files/f", str(source))
    minio.fget_object("mio", "files/f", str(tmp_path / "back"))
    assert sha256_of(tmp_path / "back") == sha256_of(source)

    # CopyObject, and ComposeObject (UploadPartCopy of byte ranges, then Complete).
    minio.copy_object("mio", "copied", CopySource("mio", "big"))
    assert minio.stat_object("mio", "copied").etag == f"{expected_etag}-6"
    minio.compose_object(
        "mio",
        "composed",
        [
            ComposeSource("mio", "big", offset=1 * MiB + 7, length=6 * MiB),
            ComposeSource("mio", "big", offset=24 * MiB),
            ComposeSource("mio", "small"),
        ],
    )
    response = minio.get_object("mio", "composed")
    try:
        assert response.read() == big[1 * MiB + 7 : 7 * MiB + 7] + big[24 * MiB :] + small
    finally:
        response.close()
        response.release_conn()

    names = ["small", "big", "files/f", "copied", "composed", "not-there"]
    errors = list(minio.remove_objects("mio", [DeleteObject(n) for n in names]))
    assert errors == []
    assert list(minio.list_objects("mio", recursive=True)) == []
    minio.remove_bucket("mio")
    assert not minio.bucket_exists("mio")


@pytest.fixture(scope="module")
def many_keys(minio: Minio) -> list[str]:
    """Bucket "many": 2,000 small objects (each holds its own key), put by minio-py
    from 8 threads; listed by minio-py and by boto3 below. The sorted keys."""
    minio.make_bucket("many")
    keys = [f"d{d}/e{e}/k{i:03d}" for d in range(4) for e in range(5) for i in range(99)]
    keys += [f"top/{i:03d}" for i in range(LISTING_KEY_COUNT - len(keys))]

    def put(key: str) -> None:
        minio.put_object("many", key, io.BytesIO(key.encode()), len(key))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    return sorted(keys)


def test_minio_lists_2000_keys_recursively_by_prefix_and_delimiter(
    minio: Minio, many_keys: list[str]
) -> None:
    listed = list(minio.list_objects("many", recursive=True))
    assert [o.object_name for o in listed] == many_keys
    assert [o.size for o in listed] == [len(k) for k in many_keys]
    assert all(o.etag == hashlib.md5(o.object_name.encode()).hexdigest() for o in listed)
    v1 = minio.list_objects("many", recursive=True, use_api_v1=True)
    assert [o.object_name for o in v1] == many_keys
    top = list(minio.list_objects("many"))
    assert [(o.object_name, o.is_dir) for o in top] == [
        (f"{name}/", True) for name in ("d0", "d1", "d2", "d3", "top")
    ]
    level = list(minio.list_objects("many", prefix="d2/"))
    assert [(o.object_name, o.is_dir) for o in level] == [(f"d2/e{e}/", True) for e in range(5)]
    leaf = [o.object_name for o in minio.list_objects("many", prefix="d2/e3/")]
    assert leaf == [f"d2/e3/k{i:03d}" for i in range(99)]
    partial = [o.object_name for o in minio.list_objects("many", prefix="d1/e", recursive=True)]
    assert partial == [k for k in many_keys if k.startswith("d1/")]
    after = minio.list_objects("many", recursive=True, start_after="d3/e4/k097")
    assert [o.object_name for o in after] == ["d3/e4/k098"] + [f"top/{i:03d}" for i in range(20)]


def test_minio_presigned_get_and_put_with_urllib3(minio: Minio) -> None:
    minio.make_bucket("mio-presigned")
    http = urllib3.PoolManager()
    data = os.urandom(100_000)
    url = minio.presigned_put_object("mio-presigned", "dir/p q")
    put = http.request("PUT", url, body=data, retries=False, timeout=10)
    assert put.status == 200, put.data
    assert put.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    url = minio.presigned_get_object(
        "mio-presigned", "dir/p q", response_headers={"response-content-type": "text/plain"}
    )
    got = http.request("GET", url, retries=False, timeout=10)
    assert got.status == 200 and got.data == data
    assert got.headers["Content-Type"] == "text/plain"
    tampered = http.request("GET", url.replace("dir/p", "dir/x"), retries=False, timeout=10)
    assert tampered.status == 403 and b"SignatureDoesNotMatch" in tampered.data


# -- boto3 ----------------------------------------------------------------------------

CHECKSUM_MODES = [
    pytest.param({}, id="sdk-default-checksums"),
    pytest.param({"request_checksum_calculation": "when_required"}, id="when-required"),
]


def crc32_base64(path: Path) -> str:
    crc = 0
    with open(path, "rb") as file:
        while block := file.read(8 * MiB):
            crc = zlib.crc32(block, crc)
    return b64encode(crc.to_bytes(4, "big")).decode()


@pytest.mark.parametrize("checksums", CHECKSUM_MODES)
def test_boto3_upload_and_download_file_1kib_to_200mib(
    node: Node, tmp_path: Path, checksums: dict[str, str]
) -> None:
    """TransferConfig defaults: 8 MiB threshold and parts, so 8 MiB and up go multipart."""
    s3 = node.client(**checksums)
    bucket = f"transfers-{'default' if not checksums else 'required'}"
    s3.create_bucket(Bucket=bucket)
    config = TransferConfig()
    for size in (1 * KiB, 5 * MiB, 8 * MiB, 64 * MiB + 1, 200 * MiB):
        source, back = tmp_path / "source", tmp_path / "back"
        write_random_file(source, size)
        s3.upload_file(str(source), bucket, "obj", Config=config)
        head = s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
        assert head["ContentLength"] == size
        multipart = size >= config.multipart_threshold
        part_size = config.multipart_chunksize if multipart else None
        assert head["ETag"] == f'"{s3_etag(source, part_size_bytes=part_size)}"', size
        if not checksums and not multipart:
            assert head["ChecksumCRC32"] == crc32_base64(source)
        s3.download_file(bucket, "obj", str(back), Config=config)
        assert sha256_of(back) == sha256_of(source), size
        s3.delete_object(Bucket=bucket, Key="obj")
        source.unlink()
        back.unlink()
    s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("checksums", CHECKSUM_MODES)
def test_boto3_lists_2000_keys_by_pages_prefix_and_delimiter(
    node: Node, many_keys: list[str], checksums: dict[str, str]
) -> None:
    s3 = node.client(**checksums)
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many"))
    assert [p["KeyCount"] for p in pages] == [1000, 1000]
    assert [o["Key"] for p in pages for o in p["Contents"]] == many_keys
    assert pages[0]["IsTruncated"] and not pages[1]["IsTruncated"]
    sized = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="many", PaginationConfig={"PageSize": 333}
        )
    )
    assert len(sized) == 7 and [o["Key"] for p in sized for o in p["Contents"]] == many_keys
    v1 = list(
        s3.get_paginator("list_objects").paginate(Bucket="many", PaginationConfig={"PageSize": 700})
    )
    assert len(v1) == 3 and [o["Key"] for p in v1 for o in p["Contents"]] == many_keys

    top = s3.list_objects_v2(Bucket="many", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["d0/", "d1/", "d2/", "d3/", "top/"]
    assert "Contents" not in top and top["KeyCount"] == 5
    level = s3.list_objects_v2(Bucket="many", Prefix="d2/", Delimiter="/")
    assert [p["Prefix"] for p in level["CommonPrefixes"]] == [f"d2/e{e}/" for e in range(5)]
    leaf_pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="many", Prefix="d2/e3/", Delimiter="/", PaginationConfig={"PageSize": 40}
    )
    leaf = [(o["Key"], o["Size"], o["ETag"]) for p in leaf_pages for o in p["Contents"]]
    assert leaf == [
        (
            f"d2/e3/k{i:03d}",
            len(f"d2/e3/k{i:03d}"),
            f'"{hashlib.md5(b"d2/e3/k%03d" % i).hexdigest()}"',
        )
        for i in range(99)
    ]
    delimited_pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="many", Delimiter="/", Prefix="d1/", PaginationConfig={"PageSize": 2}
        )
    )
    assert [p["Prefix"] for page in delimited_pages for p in page["CommonPrefixes"]] == [
        f"d1/e{e}/" for e in range(5)
    ]
    after = s3.list_objects_v2(Bucket="many", StartAfter="d3/e4/k097", MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == ["d3/e4/k098", "top/000", "top/001"]
    assert after["IsTruncated"] and "NextContinuationToken" in after
    rest = s3.list_objects_v2(
        Bucket="many", ContinuationToken=after["NextContinuationToken"], MaxKeys=1000
    )
    assert [o["Key"] for o in rest["Contents"]] == many_keys[many_keys.index("top/002") :]


@pytest.mark.parametrize("checksums", CHECKSUM_MODES)
def test_boto3_second_user_is_denied_roots_bucket(
    node: Node, s3: Any, checksums: dict[str, str]
) -> None:
    bucket = f"root-only-{'default' if not checksums else 'required'}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret", Body=b"root's")
    user, _ = node.create_user(f"other-{'default' if not checksums else 'required'}")
    other = node.client(user.access_key, user.secret_key, **checksums)
    attempts: list[Callable[[], object]] = [
        lambda: other.get_object(Bucket=bucket, Key="secret"),
        lambda: other.put_object(Bucket=bucket, Key="secret", Body=b"overwritten"),
        lambda: other.put_object(Bucket=bucket, Key="new", Body=b"x"),
        lambda: other.list_objects_v2(Bucket=bucket),
        lambda: other.list_objects(Bucket=bucket),
        lambda: other.delete_object(Bucket=bucket, Key="secret"),
        lambda: other.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/secret"),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as excinfo:
            attempt()
        response = excinfo.value.response
        assert response["Error"]["Code"] == "AccessDenied"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert bucket not in [b["Name"] for b in other.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket=bucket, Key="secret")["Body"].read() == b"root's"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret"]
