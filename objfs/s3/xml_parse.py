"""objfs.s3.xml_parse — S3 request bodies read and validated, and two request headers.

Every XML body a client sends (CreateBucket, PutBucketVersioning, DeleteObjects,
CompleteMultipartUpload, tagging, ACL, CORS) is read here and ONLY here, through
defusedxml with DTDs, entities and external references forbidden; whatever is
unreadable becomes S3Error("MalformedXML"), and whatever is readable but not
valid becomes the S3Error AWS gives (InvalidTag, MalformedACLError...). Also
here, sharing that validation: tags sent in the x-amz-tagging header
(`check_tags`) and the x-amz-copy-source header (`parse_copy_source`). Limits are
AWS's. Pure: bytes and strings in, plain values out; no store calls.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from defusedxml import ElementTree as _defused

from objfs.s3.errors import S3Error
from objfs.s3.xml_values import CHECKSUM_ALGORITHMS, CorsRule, Grant, clean, unquote_etag

_MALFORMED = (
    "The XML you provided was not well-formed or did not validate against our published schema"
)

DELETE_OBJECTS_MAX = 1000
PART_NUMBER_MAX = 10_000
OBJECT_TAGS_MAX = 10
BUCKET_TAGS_MAX = 50
TAG_KEY_CHARS_MAX = 128
TAG_VALUE_CHARS_MAX = 256
CORS_RULES_MAX = 100
ACL_GRANTS_MAX = 100
CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
GROUP_URIS = tuple(
    "http://acs.amazonaws.com/groups/" + name
    for name in ("global/AllUsers", "global/AuthenticatedUsers", "s3/LogDelivery")
)


@dataclass(frozen=True, slots=True)
class AccessControlPolicy:
    """A parsed <AccessControlPolicy>; the owner is None when the body has none."""

    owner_id: str | None
    owner_name: str | None
    grants: tuple[Grant, ...]


# --- reading a body -------------------------------------------------------------------
#
# Every parser reads the body through defusedxml (no DTD, no entity declarations, no
# external references: billion laughs and XXE fail before any expansion) and walks the
# tree iteratively, so depth costs nothing. Element names are matched without their
# namespace: SDKs send S3's, some tools none, old docs a misspelt one. Unknown elements
# are ignored (newer SDKs add fields); known ones must hold text, appear once, and be
# valid, or the parse fails with an S3Error. The caller caps the body size.

_INTEGER = re.compile(r"\s*([+-]?[0-9]{1,18})\s*")


def _malformed(detail: str, code: str = "MalformedXML") -> S3Error:
    return S3Error(code, f"{_MALFORMED} ({clean(detail)[:200]})")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse(body: bytes, root_tag: str) -> ET.Element:
    """The root element of a request body, which must be <root_tag>."""
    if not body.strip():
        raise _malformed("the request body is empty")
    try:
        root: ET.Element = _defused.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (ET.ParseError, ValueError, LookupError) as exc:
        # ValueError: defusedxml's DTDForbidden/EntitiesForbidden/ExternalReferenceForbidden;
        # LookupError: an encoding declaration naming no codec.
        raise _malformed(f"{type(exc).__name__}: {exc}") from exc
    if _local(root.tag) != root_tag:
        raise _malformed(f"the root element must be <{root_tag}>, not <{_local(root.tag)}>")
    return root


def _children(parent: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in parent if _local(child.tag) == name]


def _element(parent: ET.Element, name: str) -> ET.Element | None:
    """The one child <name> of `parent`, None when absent; twice is malformed."""
    found = _children(parent, name)
    if len(found) > 1:
        raise _malformed(f"<{name}> appears more than once")
    return found[0] if found else None


def _text(element: ET.Element) -> str:
    if len(element):
        raise _malformed(f"<{_local(element.tag)}> must hold text, not elements")
    return element.text or ""


def _one(parent: ET.Element, name: str) -> str | None:
    """The text of the one child <name>, None when absent."""
    element = _element(parent, name)
    return None if element is None else _text(element)


def _integer(text: str, name: str) -> int:
    match = _INTEGER.fullmatch(text)
    if match is None:
        raise _malformed(f"<{name}> must be an integer")
    return int(match.group(1))


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body; None for an empty body or
    constraint (us-east-1). The caller compares it with its own region.

    Raises:
        S3Error: MalformedXML.
    """
    if not body.strip():
        return None
    constraint = _one(_parse(body, "CreateBucketConfiguration"), "LocationConstraint")
    return constraint.strip() or None if constraint is not None else None


def parse_versioning(body: bytes) -> str:
    """The Status of a PutBucketVersioning body: "Enabled" or "Suspended".

    Raises:
        S3Error: MalformedXML (not a VersioningConfiguration);
            IllegalVersioningConfigurationException (no or another Status);
            NotImplemented (MfaDelete Enabled: objfs has no MFA).
    """
    root = _parse(body, "VersioningConfiguration")
    status = (_one(root, "Status") or "").strip()
    mfa_delete = (_one(root, "MfaDelete") or "Disabled").strip()
    if status not in ("Enabled", "Suspended") or mfa_delete not in ("Enabled", "Disabled"):
        raise S3Error(
            "IllegalVersioningConfigurationException",
            "The Versioning element must be specified: Status Enabled or Suspended",
        )
    if mfa_delete == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not supported")
    return status


def parse_delete_objects(body: bytes) -> tuple[bool, list[tuple[str, str | None]]]:
    """Quiet and the (key, version_id or None) entries of a DeleteObjects body, in order.

    Keys are returned exactly as sent (even empty): checking them is the caller's, per
    key, as AWS reports bad keys in the result rather than failing the request.

    Raises:
        S3Error: MalformedXML (no <Object>, more than 1000, an <Object> without <Key>,
            a <Quiet> other than true/false).
    """
    root = _parse(body, "Delete")
    quiet_text = (_one(root, "Quiet") or "false").strip().lower()
    if quiet_text not in ("true", "false"):
        raise _malformed("<Quiet> must be true or false")
    entries: list[tuple[str, str | None]] = []
    for element in _children(root, "Object"):
        if len(entries) == DELETE_OBJECTS_MAX:
            raise _malformed(f"at most {DELETE_OBJECTS_MAX} objects can be deleted at once")
        key = _one(element, "Key")
        if key is None:
            raise _malformed("every <Object> needs a <Key>")
        entries.append((key, _one(element, "VersionId")))
    if not entries:
        raise _malformed("<Delete> names no <Object>")
    return quiet_text == "true", entries


def parse_complete_multipart(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """The (part_number, etag unquoted, checksums) of a CompleteMultipartUpload body.

    Checksums map lower-case algorithm names ("crc32c") to the base64 values sent.

    Raises:
        S3Error: MalformedXML (no <Part>, a part without PartNumber/ETag, a non-integer);
            InvalidArgument (a part number outside 1..10000);
            InvalidPartOrder (part numbers not strictly ascending).
    """
    root = _parse(body, "CompleteMultipartUpload")
    parts: list[tuple[int, str, dict[str, str]]] = []
    previous = 0
    for element in _children(root, "Part"):
        number_text, etag = _one(element, "PartNumber"), _one(element, "ETag")
        if number_text is None or etag is None:
            raise _malformed("every <Part> needs a <PartNumber> and an <ETag>")
        number = _integer(number_text, "PartNumber")
        if not 1 <= number <= PART_NUMBER_MAX:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(number),
            )
        if number <= previous:
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. "
                "The parts list must be specified in order by part number.",
            )
        previous = number
        checksums: dict[str, str] = {}
        for algorithm in CHECKSUM_ALGORITHMS:
            value = _one(element, "Checksum" + algorithm)
            if value is not None:
                checksums[algorithm.lower()] = value.strip()
        parts.append((number, unquote_etag(etag), checksums))
    if not parts:
        raise _malformed("<CompleteMultipartUpload> names no <Part>")
    return parts


def check_tags(tags: Sequence[tuple[str, str]], *, max_tags: int) -> list[tuple[str, str]]:
    """`tags` as a list if S3 accepts them (also for the x-amz-tagging header).

    Raises:
        S3Error: InvalidTag (more than max_tags, an empty or duplicate key, a key over
            128 or a value over 256 characters, a key in the reserved "aws:" space).
    """
    if len(tags) > max_tags:
        raise S3Error("InvalidTag", f"A tag set can hold at most {max_tags} tags")
    seen: set[str] = set()
    for key, value in tags:
        if not key or len(key) > TAG_KEY_CHARS_MAX:
            raise S3Error("InvalidTag", f"The TagKey must be 1 to {TAG_KEY_CHARS_MAX} characters")
        if len(value) > TAG_VALUE_CHARS_MAX:
            raise S3Error(
                "InvalidTag", f"The TagValue must be at most {TAG_VALUE_CHARS_MAX} characters"
            )
        if key.lower().startswith("aws:"):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if key in seen:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        seen.add(key)
    return list(tags)


def parse_tagging(body: bytes, *, max_tags: int = OBJECT_TAGS_MAX) -> list[tuple[str, str]]:
    """The (key, value) tags of a PutObjectTagging / PutBucketTagging body, in order.

    Args:
        max_tags: OBJECT_TAGS_MAX (10) for objects, BUCKET_TAGS_MAX (50) for buckets.

    Raises:
        S3Error: MalformedXML (no single <TagSet>, a <Tag> without Key or Value);
            InvalidTag (see check_tags).
    """
    root = _parse(body, "Tagging")
    tag_set = _element(root, "TagSet")
    if tag_set is None:
        raise _malformed("<Tagging> needs a <TagSet>")
    tags: list[tuple[str, str]] = []
    for element in _children(tag_set, "Tag"):
        key, value = _one(element, "Key"), _one(element, "Value")
        if key is None or value is None:
            raise _malformed("every <Tag> needs a <Key> and a <Value>")
        tags.append((key, value))
        if len(tags) > max_tags:
            break  # enough to refuse; check_tags says why
    return check_tags(tags, max_tags=max_tags)


def _acl_error(detail: str) -> S3Error:
    return S3Error(
        "MalformedACLError",
        f"The XML you provided was not well-formed or did not validate against our "
        f"published schema ({clean(detail)[:200]})",
    )


def _grant(element: ET.Element) -> Grant:
    grantee = _element(element, "Grantee")
    permission = (_one(element, "Permission") or "").strip()
    if grantee is None or permission not in PERMISSIONS:
        raise _acl_error(f"every <Grant> needs a <Grantee> and one of {', '.join(PERMISSIONS)}")
    kind = next((v.strip() for k, v in grantee.attrib.items() if _local(k) == "type"), None)
    identity, uri = _one(grantee, "ID"), _one(grantee, "URI")
    if kind is None:  # no xsi:type: say what the children say
        kind = "CanonicalUser" if identity is not None else "Group" if uri is not None else ""
    if kind == "CanonicalUser" and identity is not None and identity.strip():
        return (kind, identity.strip(), _one(grantee, "DisplayName"), permission)
    if kind == "Group" and uri is not None:
        if uri.strip() not in GROUP_URIS:
            raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="uri")
        return (kind, uri.strip(), None, permission)
    if kind == "AmazonCustomerByEmail":
        raise S3Error("NotImplemented", "grants to an email address are not supported")
    raise _acl_error("a <Grantee> needs xsi:type CanonicalUser with <ID> or Group with <URI>")


def parse_access_control_policy(body: bytes) -> AccessControlPolicy:
    """The owner and grants of a PutBucketAcl / PutObjectAcl body.

    Raises:
        S3Error: MalformedXML (not XML, another root); MalformedACLError (a grant without
            grantee or valid permission, more than 100 grants); InvalidArgument (an
            unknown group URI); NotImplemented (grants by email address).
    """
    root = _parse(body, "AccessControlPolicy")
    owner = _element(root, "Owner")
    owner_id = None if owner is None else _one(owner, "ID")
    owner_name = None if owner is None else _one(owner, "DisplayName")
    acl = _element(root, "AccessControlList")
    elements = [] if acl is None else _children(acl, "Grant")
    if len(elements) > ACL_GRANTS_MAX:
        raise _acl_error(f"an ACL holds at most {ACL_GRANTS_MAX} grants")
    return AccessControlPolicy(owner_id, owner_name, tuple(_grant(e) for e in elements))


def _cors_rule(element: ET.Element) -> CorsRule:
    def values(name: str) -> tuple[str, ...]:
        return tuple(_text(child).strip() for child in _children(element, name))

    origins, methods = values("AllowedOrigin"), values("AllowedMethod")
    headers = values("AllowedHeader")
    if not origins or not methods:
        raise _malformed("every <CORSRule> needs an <AllowedOrigin> and an <AllowedMethod>")
    for method in methods:
        if method not in CORS_METHODS:
            raise S3Error(
                "InvalidRequest",
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}",
            )
    for tag, patterns in (("AllowedOrigin", origins), ("AllowedHeader", headers)):
        for pattern in patterns:
            if pattern.count("*") > 1:
                raise S3Error(
                    "InvalidRequest", f'{tag} "{pattern}" can not have more than one wildcard.'
                )
    max_age_text = _one(element, "MaxAgeSeconds")
    max_age = None if max_age_text is None else _integer(max_age_text, "MaxAgeSeconds")
    if max_age is not None and max_age < 0:
        raise _malformed("<MaxAgeSeconds> must not be negative")
    rule_id = _one(element, "ID")
    if rule_id is not None and len(rule_id) > 255:
        raise S3Error("InvalidArgument", "The ID of a CORS rule is at most 255 characters")
    return CorsRule(origins, methods, headers, values("ExposeHeader"), max_age, rule_id)


def parse_cors_configuration(body: bytes) -> list[CorsRule]:
    """The rules of a PutBucketCors body, in order.

    Raises:
        S3Error: MalformedXML (no rule, more than 100, a rule without origin or method,
            a bad MaxAgeSeconds); InvalidRequest (a method other than GET PUT POST DELETE
            HEAD, an origin or header with two wildcards); InvalidArgument (an ID over 255).
    """
    root = _parse(body, "CORSConfiguration")
    elements = _children(root, "CORSRule")
    if not elements:
        raise _malformed("<CORSConfiguration> needs at least one <CORSRule>")
    if len(elements) > CORS_RULES_MAX:
        raise _malformed(f"a CORS configuration holds at most {CORS_RULES_MAX} rules")
    return [_cors_rule(element) for element in elements]


# --- x-amz-copy-source ----------------------------------------------------------------


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version_id or None) of an x-amz-copy-source header.

    The header is "[/]bucket/key[?versionId=id]" with bucket and key percent-encoded
    (SDKs encode "+" as %2B, so a literal "+" stays "+": no form decoding).

    Raises:
        S3Error: InvalidArgument (no bucket or key, bad encoding, empty versionId).
    """
    path, _, query = value.strip().partition("?")
    try:
        bucket, _, key = unquote(path.removeprefix("/"), errors="strict").partition("/")
        # Not parse_qsl: botocore appends the version id unencoded, and "+" is no space.
        version_ids = [
            unquote(field[len("versionId=") :], errors="strict")
            for field in query.split("&")
            if field.startswith("versionId=")
        ]
    except UnicodeDecodeError as exc:
        raise _copy_source_error("is not percent-encoded UTF-8") from exc
    if not bucket or not key:
        raise _copy_source_error("must name the source bucket and key: bucket/key")
    if version_ids and not version_ids[0]:
        raise _copy_source_error("names an empty versionId")
    return bucket, key, version_ids[0] if version_ids else None


def _copy_source_error(detail: str) -> S3Error:
    return S3Error(
        "InvalidArgument", f"x-amz-copy-source {detail}", ArgumentName="x-amz-copy-source"
    )
