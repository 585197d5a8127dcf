"""objfs.s3.acl — access control lists: who may read or write a bucket or an object.

An ACL is a list of grants (grantee, permission); a grantee is a user (by
canonical id) or a group (all users, anonymous included; authenticated users).
Canned ACLs (`x-amz-acl`) and `x-amz-grant-*` headers turn into grants here;
an ACL is stored as JSON: a bucket's in its `acl` setting, an object's in its
`a:acl` metadata entry. The rules, as S3's:

- root and the bucket owner may do everything to the bucket and its objects;
- bucket READ lets a grantee list, bucket WRITE put and delete objects;
- object READ lets a grantee get the object (anonymously too, for AllUsers);
- READ_ACP / WRITE_ACP read and change the ACL itself; FULL_CONTROL is all four.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from objfs.s3.errors import S3Error
from objfs.s3.users import User

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL = (
    "READ",
    "WRITE",
    "READ_ACP",
    "WRITE_ACP",
    "FULL_CONTROL",
)
OBJECT_ACL_METADATA = "a:acl"
BUCKET_ACL_SETTING = "acl"
CANNED = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)
_GRANT_HEADERS = {
    "x-amz-grant-read": READ,
    "x-amz-grant-write": WRITE,
    "x-amz-grant-read-acp": READ_ACP,
    "x-amz-grant-write-acp": WRITE_ACP,
    "x-amz-grant-full-control": FULL_CONTROL,
}


@dataclass(frozen=True, slots=True)
class Grant:
    kind: str  # "CanonicalUser" or "Group"
    grantee: str  # canonical id or group URI
    permission: str


@dataclass(frozen=True, slots=True)
class Acl:
    owner: str  # canonical id
    grants: tuple[Grant, ...]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "grants": [[g.kind, g.grantee, g.permission] for g in self.grants],
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Acl:
        data = json.loads(raw)
        return cls(data["owner"], tuple(Grant(*grant) for grant in data["grants"]))

    def allows(self, user: User | None, permission: str) -> bool:
        """Whether `user` (None: anonymous) holds `permission` under this ACL."""
        for grant in self.grants:
            if grant.permission not in (permission, FULL_CONTROL):
                continue
            if grant.kind == "Group":
                if grant.grantee == ALL_USERS:
                    return True
                if grant.grantee == AUTHENTICATED_USERS and user is not None:
                    return True
            elif user is not None and grant.grantee == user.canonical_id:
                return True
        return False


def private(owner: str) -> Acl:
    return Acl(owner, (Grant("CanonicalUser", owner, FULL_CONTROL),))


def canned(name: str, owner: str, bucket_owner: str | None = None) -> Acl:
    """The ACL a canned name stands for.

    Raises:
        S3Error: InvalidArgument for an unknown name.
    """
    grants = [Grant("CanonicalUser", owner, FULL_CONTROL)]
    if name == "public-read":
        grants.append(Grant("Group", ALL_USERS, READ))
    elif name == "public-read-write":
        grants += [Grant("Group", ALL_USERS, READ), Grant("Group", ALL_USERS, WRITE)]
    elif name == "authenticated-read":
        grants.append(Grant("Group", AUTHENTICATED_USERS, READ))
    elif name == "bucket-owner-read" and bucket_owner and bucket_owner != owner:
        grants.append(Grant("CanonicalUser", bucket_owner, READ))
    elif name == "bucket-owner-full-control" and bucket_owner and bucket_owner != owner:
        grants.append(Grant("CanonicalUser", bucket_owner, FULL_CONTROL))
    elif name == "log-delivery-write":
        grants += [Grant("Group", LOG_DELIVERY, WRITE), Grant("Group", LOG_DELIVERY, READ_ACP)]
    elif name not in CANNED:
        raise S3Error("InvalidArgument", f"{name!r} is not a canned ACL", ArgumentName="x-amz-acl")
    return Acl(owner, tuple(grants))


def from_headers(
    headers: dict[str, str], owner: str, bucket_owner: str | None = None
) -> Acl | None:
    """The ACL a request sets through `x-amz-acl` or `x-amz-grant-*`, or None.

    Raises:
        S3Error: InvalidRequest for both at once; InvalidArgument for a grantee
            that is not `id="..."` or `uri="..."`.
    """
    grant_headers = [name for name in _GRANT_HEADERS if name in headers]
    if "x-amz-acl" in headers:
        if grant_headers:
            raise S3Error(
                "InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed"
            )
        return canned(headers["x-amz-acl"].strip(), owner, bucket_owner)
    if not grant_headers:
        return None
    grants = []
    for name in grant_headers:
        for part in headers[name].split(","):
            kind_text, _, value = part.strip().partition("=")
            value = value.strip().strip('"')
            if kind_text.strip() == "id" and value:
                grants.append(Grant("CanonicalUser", value, _GRANT_HEADERS[name]))
            elif kind_text.strip() == "uri" and value:
                grants.append(Grant("Group", value, _GRANT_HEADERS[name]))
            else:
                raise S3Error(
                    "InvalidArgument", f'grantee {part.strip()!r}: use id="..." or uri="..."'
                )
    return Acl(owner, tuple(grants))


def from_policy(owner: str, grants: tuple[tuple[str, str, str | None, str], ...]) -> Acl:
    """The ACL of a parsed AccessControlPolicy body (xml.parse_access_control_policy)."""
    return Acl(
        owner, tuple(Grant(kind, grantee, permission) for kind, grantee, _, permission in grants)
    )


def rendered_grants(acl: Acl) -> list[tuple[str, str, str | None, str]]:
    """(kind, id or uri, display name, permission) for xml.access_control_policy."""
    return [(g.kind, g.grantee, None, g.permission) for g in acl.grants]
