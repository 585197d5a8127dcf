"""objfs.s3.users — who may sign S3 requests: access keys, secrets, names, canonical ids.

Owns the node's user list, kept in `DATA/users.json` (replaced atomically on
every change, mode 0600: it holds secrets). The **root** user comes from
`OBJFS_ROOT_ACCESS_KEY` / `OBJFS_ROOT_SECRET_KEY` when set, else it is
generated at first start, stored, and its secret printed once by the caller.
Root may act on every bucket; every other user on the buckets it owns (and,
with ACLs, on those granted to it). When the cluster lands, this list moves
into the Raft-replicated catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from typing import final

from objfs.errors import ConfigError, UsageError
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


def new_user(name: str, access_key: str | None = None, secret_key: str | None = None) -> User:
    """A user with the given or fresh keys (20-character key id, 40-character secret).

    Raises:
        UsageError: a malformed name, key or secret.
    """
    if not _NAME.fullmatch(name):
        raise UsageError(f"user name {name!r}: use 1 to 64 letters, digits and . _ @ + -")
    access_key = access_key or "OBJFS" + secrets.token_hex(8).upper()[:15]
    secret_key = secret_key or secrets.token_urlsafe(30)[:40]
    if not _ACCESS_KEY.fullmatch(access_key):
        raise UsageError(f"access key {access_key!r}: use 3 to 128 letters, digits and . _ -")
    if not 8 <= len(secret_key) <= 128 or not secret_key.isprintable():
        raise UsageError("a secret key has 8 to 128 printable characters")
    return User(name, access_key, secret_key, _canonical_id(name), name)


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
        path = os.path.join(data_dir, USERS_FILE)
        raw = read_small_file(path)
        users: list[User] = []
        if raw is not None:
            try:
                users = [User(**entry) for entry in json.loads(raw)["users"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}: not an objfs users file ({exc})") from exc
        loaded = cls(path, users)
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
