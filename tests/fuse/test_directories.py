"""Directories through the mount: mkdir/rmdir and their errors, readdir (also
while the directory changes), st_nlink, marker objects, directories S3 made
with prefixes, and the rule for keys the mount cannot show."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from fuse_node import BUCKET, Mounted
from mount_helpers import (
    delete_many,
    errno_of,
    key_of,
    listing_client,
    prefix_of,
    put_many,
    s3_get,
    s3_missing,
    s3_objects,
)


def test_mkdir_makes_a_marker_object(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "empty")
    os.mkdir(path, 0o750)
    info = os.stat(path)
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o750
    assert info.st_uid == os.getuid()
    assert os.listdir(path) == []
    listed = s3_objects(s3, prefix_of(workdir))
    assert list(listed) == [prefix_of(workdir), prefix_of(workdir) + "empty/"]
    assert listed[prefix_of(workdir) + "empty/"]["Size"] == 0
    # S3 tools see it as a "folder" with the delimiter too
    page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix_of(workdir), Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [prefix_of(workdir) + "empty/"]
    os.rmdir(path)
    assert not os.path.exists(path)
    assert s3_missing(s3, prefix_of(workdir) + "empty/")


def test_mkdir_errors(workdir: str) -> None:
    os.mkdir(os.path.join(workdir, "d"))
    with open(os.path.join(workdir, "f"), "wb") as file:
        file.write(b"f")
    assert errno_of(lambda: os.mkdir(os.path.join(workdir, "d"))) == errno.EEXIST
    assert errno_of(lambda: os.mkdir(os.path.join(workdir, "f"))) == errno.EEXIST
    assert errno_of(lambda: os.mkdir(os.path.join(workdir, "no", "d"))) == errno.ENOENT
    assert errno_of(lambda: os.mkdir(os.path.join(workdir, "f", "d"))) == errno.ENOTDIR
    assert errno_of(lambda: os.mkdir(os.path.join(workdir, "n" * 256))) == errno.ENAMETOOLONG
    assert sorted(os.listdir(workdir)) == ["d", "f"]


def test_rmdir_errors(mounted: Mounted, workdir: str, s3: Any) -> None:
    full = os.path.join(workdir, "full")
    os.mkdir(full)
    with open(os.path.join(full, "x"), "wb") as file:
        file.write(b"x")
    assert errno_of(lambda: os.rmdir(full)) == errno.ENOTEMPTY
    os.mkdir(os.path.join(workdir, "nested"))
    os.mkdir(os.path.join(workdir, "nested", "inner"))
    assert errno_of(lambda: os.rmdir(os.path.join(workdir, "nested"))) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rmdir(os.path.join(full, "x"))) == errno.ENOTDIR
    assert errno_of(lambda: os.rmdir(os.path.join(workdir, "missing"))) == errno.ENOENT
    assert errno_of(lambda: os.rmdir(os.path.join(workdir, "nested", "."))) == errno.EINVAL
    # a key S3 put into an empty directory makes it non-empty at once
    os.mkdir(os.path.join(workdir, "s3fed"))
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "s3fed/k", Body=b"k")
    assert errno_of(lambda: os.rmdir(os.path.join(workdir, "s3fed"))) == errno.ENOTEMPTY
    os.unlink(os.path.join(full, "x"))
    os.rmdir(full)
    os.rmdir(os.path.join(workdir, "nested", "inner"))
    os.rmdir(os.path.join(workdir, "nested"))
    assert os.listdir(workdir) == ["s3fed"]


def test_readdir_lists_names_and_types(mounted: Mounted, workdir: str, s3: Any) -> None:
    os.mkdir(os.path.join(workdir, "sub"))
    with open(os.path.join(workdir, "file.txt"), "wb") as file:
        file.write(b"hello")
    os.symlink("file.txt", os.path.join(workdir, "link"))
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "from-s3", Body=b"s3")
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "prefix-only/deep/k", Body=b"k")
    with os.scandir(workdir) as entries:
        kinds = {
            entry.name: (
                entry.is_dir(follow_symlinks=False),
                entry.is_file(follow_symlinks=False),
                entry.is_symlink(),
            )
            for entry in entries
        }
    assert kinds == {
        "sub": (True, False, False),
        "file.txt": (False, True, False),
        "link": (False, False, True),
        "from-s3": (False, True, False),
        "prefix-only": (True, False, False),
    }
    # "." and ".." are the directory and its parent
    assert (
        os.stat(os.path.join(workdir, "sub", ".")).st_ino
        == os.stat(os.path.join(workdir, "sub")).st_ino
    )
    assert os.stat(os.path.join(workdir, "sub", "..")).st_ino == os.stat(workdir).st_ino


def test_readdir_while_the_directory_changes(mounted: Mounted, workdir: str, s3: Any) -> None:
    """Entries present throughout a listing are returned exactly once, whatever is
    added or removed meanwhile (through S3 or the mount)."""
    prefix = prefix_of(workdir)
    original = {f"f{i:05d}" for i in range(1500)}  # libc reads ~1,000 per getdents
    put_many(mounted, ((prefix + name, b"") for name in sorted(original)))
    removed_s3 = {f"f{i:05d}" for i in range(1200, 1300)}
    removed_mount = {f"f{i:05d}" for i in range(1400, 1410)}
    added = {f"g{i:04d}" for i in range(100)} | {"h-mount"}
    seen: list[str] = []
    with os.scandir(workdir) as entries:
        for entry in entries:
            seen.append(entry.name)
            if len(seen) == 5:  # the listing has begun: change the directory under it
                delete_many(mounted, (prefix + name for name in sorted(removed_s3)))
                for name in removed_mount:
                    os.unlink(os.path.join(workdir, name))
                put_many(mounted, ((prefix + name, b"") for name in sorted(added - {"h-mount"})))
                with open(os.path.join(workdir, "h-mount"), "wb"):
                    pass
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    untouched = original - removed_s3 - removed_mount
    assert untouched <= set(seen)
    assert set(seen) <= original | added
    after = set(os.listdir(workdir))
    assert after == untouched | added
    listed = s3_objects(listing_client(mounted), prefix)
    assert {key[len(prefix) :] for key in listed if key != prefix} == after


def test_directory_link_counts(mounted: Mounted, workdir: str, s3: Any) -> None:
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    assert os.stat(d).st_nlink == 2
    os.mkdir(os.path.join(d, "x"))
    os.mkdir(os.path.join(d, "y"))
    with open(os.path.join(d, "file"), "wb"):
        pass
    assert os.stat(d).st_nlink == 4  # files do not count
    os.rmdir(os.path.join(d, "x"))
    assert os.stat(d).st_nlink == 3
    s3.put_object(Bucket=BUCKET, Key=key_of(mounted, d) + "/z/k", Body=b"")  # a prefix-only dir
    assert os.stat(d).st_nlink == 4
    s3.delete_object(Bucket=BUCKET, Key=key_of(mounted, d) + "/z/k")
    assert os.stat(d).st_nlink == 3
    assert os.stat(workdir).st_nlink == 3
    root = mounted.mountpoint
    subdirs = [name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))]
    assert os.stat(root).st_nlink == 2 + len(subdirs)


def test_keys_under_a_prefix_are_directories(mounted: Mounted, workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    s3.put_object(Bucket=BUCKET, Key=prefix + "p/q/r.txt", Body=b"deep")
    s3.put_object(Bucket=BUCKET, Key=prefix + "p/top", Body=b"top")
    p = os.path.join(workdir, "p")
    assert os.path.isdir(p)
    assert os.path.isdir(os.path.join(p, "q"))
    assert sorted(os.listdir(p)) == ["q", "top"]
    with open(os.path.join(p, "q", "r.txt"), "rb") as file:
        assert file.read() == b"deep"
    dir_info, file_info = os.stat(p), os.stat(os.path.join(p, "top"))
    assert dir_info.st_mode == stat.S_IFDIR | 0o755
    assert file_info.st_mode == stat.S_IFREG | 0o644
    assert (dir_info.st_uid, file_info.st_uid) == (os.getuid(), os.getuid())
    assert file_info.st_size == 3
    s3.delete_object(Bucket=BUCKET, Key=prefix + "p/q/r.txt")
    assert os.listdir(p) == ["top"]  # q had no marker: it went with its last key
    s3.delete_object(Bucket=BUCKET, Key=prefix + "p/top")
    assert not os.path.exists(p)
    assert os.listdir(workdir) == []


def test_files_made_inside_a_prefix_only_directory(mounted: Mounted, workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    s3.put_object(Bucket=BUCKET, Key=prefix + "bare/seed", Body=b"seed")
    bare = os.path.join(workdir, "bare")
    os.mkdir(os.path.join(bare, "sub"))
    with open(os.path.join(bare, "sub", "f"), "wb") as file:
        file.write(b"made in the mount")
    assert s3_get(s3, prefix + "bare/sub/f") == b"made in the mount"
    assert prefix + "bare/sub/" in s3_objects(s3, prefix)


def test_unlinking_the_last_file_keeps_the_directory(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "bare/only", Body=b"x")
    bare = os.path.join(workdir, "bare")
    os.unlink(os.path.join(bare, "only"))
    assert os.path.isdir(bare)  # POSIX: unlink removes a name, never its directory
    os.rmdir(bare)


def test_object_and_directory_of_one_name(mounted: Mounted, workdir: str, s3: Any) -> None:
    """The documented rule: keys `a` and `a/b` both exist -> the directory `a` is
    shown and the object `a` hidden, untouched."""
    prefix = prefix_of(workdir)
    s3.put_object(Bucket=BUCKET, Key=prefix + "a", Body=b"the object a")
    s3.put_object(Bucket=BUCKET, Key=prefix + "a/b", Body=b"b inside")
    a = os.path.join(workdir, "a")
    assert os.listdir(workdir) == ["a"]
    assert os.path.isdir(a)
    with open(os.path.join(a, "b"), "rb") as file:
        assert file.read() == b"b inside"
    assert errno_of(lambda: os.unlink(a)) == errno.EISDIR
    assert errno_of(lambda: os.open(a, os.O_CREAT | os.O_EXCL | os.O_WRONLY)) == errno.EEXIST
    assert s3_get(s3, prefix + "a") == b"the object a"
    # once S3 deletes the last key under a/, the object shows again
    s3.delete_object(Bucket=BUCKET, Key=prefix + "a/b")
    assert os.path.isfile(a)
    with open(a, "rb") as file:
        assert file.read() == b"the object a"
    assert s3_get(s3, prefix + "a") == b"the object a"


def test_keys_that_are_not_paths_are_hidden(mounted: Mounted, workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    hidden = {
        prefix + "x//y": b"double slash inside",
        prefix + "/lead": b"empty segment first",
        prefix + "L" * 256: b"a name longer than 255 bytes",
    }
    for key, body in hidden.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    s3.put_object(Bucket=BUCKET, Key=prefix + "ok", Body=b"ok")
    assert sorted(os.listdir(workdir)) == ["ok", "x"]  # x holds only the hidden x//y
    x = os.path.join(workdir, "x")
    assert os.path.isdir(x)
    assert os.listdir(x) == []
    with open(os.path.join(workdir, "new"), "wb") as file:
        file.write(b"new")
    os.unlink(os.path.join(workdir, "ok"))
    for key, body in hidden.items():
        assert s3_get(s3, key) == body
    assert set(s3_objects(s3, prefix)) == {prefix, prefix + "new", *hidden}


def test_rmdir_of_a_directory_holding_only_hidden_keys(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "x//y", Body=b"hidden")
    x = os.path.join(workdir, "x")
    assert os.listdir(x) == []
    assert errno_of(lambda: os.rmdir(x)) == errno.ENOTEMPTY  # the hidden key is kept
    assert s3_get(s3, prefix_of(workdir) + "x//y") == b"hidden"


def test_empty_directory_from_an_s3_marker(mounted: Mounted, workdir: str, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "folder/", Body=b"")
    folder = os.path.join(workdir, "folder")
    assert os.path.isdir(folder)
    assert os.listdir(folder) == []
    os.rmdir(folder)
    assert s3_missing(s3, prefix_of(workdir) + "folder/")
