"""objfs.s3.users — who may sign S3 requests: access keys, secrets, names, canonical ids.

Owns the node's user list, kept in `DATA/users.json` (replaced atomically on
every change, mode 0600: it holds secrets). The **root** user comes from
`OBJFS_ROOT_ACCESS_KEY` / `OBJFS_ROOT_SECRET_KEY` when set, else it is
generated at first start, stored, and its secret printed once by the caller.
Root may act on every bucket; every other user on the buckets it owns (and,
with ACLs, on those granted to it).

On a single node the file is the list: `objfs user` edits it, and the running
node re-reads it when it changes. On a cluster node the list lives in the
cluster's Raft catalog (objfs.cluster.catalog; docs/cluster.md, "Users"): the
first node seeds the catalog with its users, every node replaces its whole
list with the catalog's (`replace_all`, on the event loop) whenever a user
change is applied, and `users.json` is only a cache of it, rewritten after
each change, so `objfs user list` can answer while the node is stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from typing import final

from objfs.errors import ConfigError, InvalidArgument, UsageError
from objfs.store.device import (
    file_stamp,
    make_directory,
    read_small_file,
    write_file_atomically,
)

ROOT = "root"
USERS_FILE = "users.json"
_ACCESS_KEY = re.compile(r"[A-Za-z0-9._-]{3,128}")
_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_CANONICAL_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    access_key: str
    secret_key: str
    canonical_id: str  # 64 hex digits, as S3 shows owners
    display_name: str

    @property
    def is_root(self) -> bool:
        return self.name == ROOT


def _canonical_id(name: str) -> str:
    return hashlib.sha256(f"objfs-user:{name}".encode()).hexdigest()


def _problem(name: str, access_key: str, secret_key: str) -> str | None:
    """What is wrong with these fields, or None."""
    if not _NAME.fullmatch(name):
        return f"user name {name!r}: use 1 to 64 letters, digits and . _ @ + -"
    if not _ACCESS_KEY.fullmatch(access_key):
        return f"access key {access_key!r}: use 3 to 128 letters, digits and . _ -"
    if not 8 <= len(secret_key) <= 128 or not secret_key.isprintable():
        return "a secret key has 8 to 128 printable characters"
    return None


def new_user(name: str, access_key: str | None = None, secret_key: str | None = None) -> User:
    """A user with the given or fresh keys (20-character key id, 40-character secret).

    Raises:
        UsageError: a malformed name, key or secret.
    """
    access_key = access_key or "OBJFS" + secrets.token_hex(8).upper()[:15]
    secret_key = secret_key or secrets.token_urlsafe(30)[:40]
    problem = _problem(name, access_key, secret_key)
    if problem is not None:
        raise UsageError(problem)
    return User(name, access_key, secret_key, _canonical_id(name), name)


def user_from_fields(fields: object) -> User:
    """A user from plain data (a catalog change, a users file entry), checked as
    `new_user` checks what it is given. Pure: the cluster's catalog applies it.

    Raises:
        InvalidArgument: not a mapping of the five fields, or a malformed one.
    """
    if not isinstance(fields, dict):
        raise InvalidArgument(f"a user is an object of its fields, not {type(fields).__name__}")
    names = ("name", "access_key", "secret_key", "canonical_id", "display_name")
    values = [fields.get(name) for name in names]
    if not all(isinstance(value, str) for value in values) or set(fields) != set(names):
        raise InvalidArgument(f"a user has exactly the string fields {', '.join(names)}")
    user = User(*(str(value) for value in values))
    problem = _problem(user.name, user.access_key, user.secret_key)
    if problem is not None:
        raise InvalidArgument(problem)
    if not _CANONICAL_ID.fullmatch(user.canonical_id):
        raise InvalidArgument(f"canonical id {user.canonical_id!r}: 64 lowercase hex digits")
    if not 1 <= len(user.display_name) <= 128 or not user.display_name.isprintable():
        raise InvalidArgument("a display name has 1 to 128 printable characters")
    return user


@final
class Users:
    """The user list of one node (load, look up, add, remove; saved on every change)."""

    def __init__(self, path: str, users: list[User]) -> None:
        self.path = path
        self._by_name = {user.name: user for user in users}
        self._by_key = {user.access_key: user for user in users}
        self._stamp = file_stamp(path)

    @classmethod
    def load(cls, data_dir: str, environ: dict[str, str] | None = None) -> tuple[Users, bool]:
        """The users of the node in `data_dir`, with root set up: returns (users,
        whether root was just generated, so its secret should be shown once).
        Blocking (small file reads and writes): call from a thread.

        Raises:
            ConfigError: the users file is not readable as objfs's.
        """
        environ = dict(os.environ if environ is None else environ)
        loaded = cls.read(data_dir)
        key, secret = environ.get("OBJFS_ROOT_ACCESS_KEY"), environ.get("OBJFS_ROOT_SECRET_KEY")
        if bool(key) != bool(secret):
            raise ConfigError(
                "OBJFS_ROOT_ACCESS_KEY and OBJFS_ROOT_SECRET_KEY: set both or neither"
            )
        root = loaded.get(ROOT)
        generated = False
        if key and secret:
            try:
                wanted = new_user(ROOT, key, secret)
            except UsageError as exc:
                raise ConfigError(f"OBJFS_ROOT_ACCESS_KEY/OBJFS_ROOT_SECRET_KEY: {exc}") from exc
            if root != wanted:
                loaded._put(wanted, replacing=root)
        elif root is None:
            loaded._put(new_user(ROOT), replacing=None)
            generated = True
        return loaded, generated

    @classmethod
    def read(cls, data_dir: str) -> Users:
        """The users file as it is (empty if there is none): nothing generated, no
        OBJFS_ROOT_* applied, nothing written. For a stopped cluster node's cache.
        Blocking.

        Raises:
            ConfigError: the users file is not readable as objfs's.
        """
        path = os.path.join(data_dir, USERS_FILE)
        raw = read_small_file(path)
        users: list[User] = []
        if raw is not None:
            try:
                users = [User(**entry) for entry in json.loads(raw)["users"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}: not an objfs users file ({exc})") from exc
        return cls(path, users)

    def replace_all(self, users: list[User]) -> None:
        """Make `users` the whole list (a cluster node, from its catalog). In memory
        only, no I/O: called on the event loop as the change is applied; `save`
        writes the file afterwards."""
        self._by_name = {user.name: user for user in users}
        self._by_key = {user.access_key: user for user in users}

    def save(self) -> None:
        """Write the list to the users file (atomically, mode 0600). Blocking."""
        self._save()

    def reload_if_changed(self) -> bool:
        """Re-read the users file if another process (`objfs user create` while the
        node runs) replaced it. Blocking: call from a thread. Returns whether it did.

        Raises:
            ConfigError: the file is no longer readable as objfs's.
        """
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return False
        raw = read_small_file(self.path)
        if raw is None:
            return False
        try:
            users = [User(**entry) for entry in json.loads(raw)["users"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not an objfs users file ({exc})") from exc
        self._by_name = {user.name: user for user in users}
        self._by_key = {user.access_key: user for user in users}
        self._stamp = stamp
        return True

    def get(self, name: str) -> User | None:
        return self._by_name.get(name)

    def by_access_key(self, access_key: str) -> User | None:
        return self._by_key.get(access_key)

    def secret_for(self, access_key: str) -> str | None:
        user = self._by_key.get(access_key)
        return None if user is None else user.secret_key

    def by_canonical_id(self, canonical_id: str) -> User | None:
        return next((u for u in self._by_name.values() if u.canonical_id == canonical_id), None)

    def all(self) -> list[User]:
        return sorted(self._by_name.values(), key=lambda user: user.name)

    def create(
        self, name: str, access_key: str | None = None, secret_key: str | None = None
    ) -> User:
        """Add a user and save. Blocking.

        Raises:
            UsageError: the name or access key is taken, or malformed.
        """
        user = new_user(name, access_key, secret_key)
        if name in self._by_name:
            raise UsageError(f"user {name!r} exists")
        if user.access_key in self._by_key:
            raise UsageError(f"access key {user.access_key!r} is taken")
        self._put(user, replacing=None)
        return user

    def delete(self, name: str) -> None:
        """Remove a user (not root) and save. Blocking.

        Raises:
            UsageError: no such user, or root.
        """
        user = self._by_name.get(name)
        if user is None:
            raise UsageError(f"no user {name!r}")
        if user.is_root:
            raise UsageError("root cannot be deleted (set OBJFS_ROOT_* to change its keys)")
        del self._by_name[name]
        del self._by_key[user.access_key]
        self._save()

    def _put(self, user: User, *, replacing: User | None) -> None:
        if replacing is not None:
            self._by_key.pop(replacing.access_key, None)
        self._by_name[user.name] = user
        self._by_key[user.access_key] = user
        self._save()

    def _save(self) -> None:
        body = json.dumps({"format": 1, "users": [asdict(u) for u in self.all()]}, indent=1)
        make_directory(os.path.dirname(os.path.abspath(self.path)))
        write_file_atomically(self.path, body.encode())
        self._stamp = file_stamp(self.path)
