"""The S3 XML vocabulary: what we render, real SDKs read; what SDKs send, we parse.

Method: render each response and parse it with botocore's own RestXMLParser against
the S3 service model (so boto3 reads our bodies as it reads AWS's); build each request
body with botocore's rest-xml serializer and parse it with objfs.s3.xml_parse. Golden bytes
pin the layout of a few documents; hostile bodies (entities, DTDs, depth, junk) must
end as an S3Error, never as another exception.
"""

from __future__ import annotations

import datetime
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore import handlers
from botocore.parsers import RestXMLParser
from botocore.serialize import create_serializer

from objfs.s3 import xml_listing, xml_parse, xml_render, xml_values
from objfs.s3.errors import S3Error
from objfs.store.types import (
    BucketInfo,
    BucketName,
    ListPage,
    ObjectInfo,
    ObjectKey,
    VersionId,
    Versioning,
)

MODEL = botocore.session.get_session().get_service_model("s3")
PARSER = RestXMLParser()
SERIALIZER = create_serializer("rest-xml", include_validation=True)
NS = "{" + xml_values.S3_NAMESPACE + "}"
PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n'

T0_NS = 1_795_000_000_123_456_789  # 2026-11-18T11:06:40.123456789Z
T0 = datetime.datetime(2026, 11, 18, 11, 6, 40, 123_000, tzinfo=datetime.UTC)
OWNER = xml_values.Owner("c0ffee", "ops")
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
# Keys that need escaping in XML or in URLs, and one with a character XML cannot carry.
AWKWARD_KEYS = ("a b+c/d=e", "x&y<z>'\"", "dir/ünï©ødé ☃", " lead and trail ", "100%/a?b#c")


def parsed(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """What boto3 would hand its caller for this response body."""
    shape = MODEL.operation_model(operation).output_shape
    result: dict[str, Any] = PARSER.parse(
        {"body": body, "headers": {}, "status_code": status}, shape
    )
    return result


def request_body(operation: str, params: dict[str, Any]) -> bytes:
    """The body boto3 would send for this call."""
    request = SERIALIZER.serialize_to_request(params, MODEL.operation_model(operation))
    body: bytes = request["body"]
    return body


def obj(
    key: str,
    *,
    version_id: str = "null",
    etag: str | None = "abc",
    size: int = 3,
    is_latest: bool = True,
    delete_marker: bool = False,
    checksums: tuple[tuple[str, str], ...] = (),
) -> ObjectInfo:
    return ObjectInfo(
        bucket=BucketName("b"),
        key=ObjectKey(key),
        version_id=VersionId(version_id),
        size_bytes=size,
        mtime_ns=T0_NS,
        etag=etag,
        content_type="application/octet-stream",
        metadata=(),
        checksums=checksums,
        posix=None,
        is_latest=is_latest,
        delete_marker=delete_marker,
    )


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(S3Error) as caught:
        call()
    return caught.value.code


# --- dates and ETags -------------------------------------------------------------------


def test_dates() -> None:
    assert xml_values.last_modified_iso(0) == "1970-01-01T00:00:00.000Z"
    assert xml_values.last_modified_iso(T0_NS) == "2026-11-18T11:06:40.123Z"
    assert xml_values.last_modified_iso(999_999_999) == "1970-01-01T00:00:00.999Z"  # truncated
    assert xml_values.http_date(T0_NS) == "Wed, 18 Nov 2026 11:06:40 GMT"
    assert xml_values.parse_http_date("Wed, 18 Nov 2026 11:06:40 GMT") == 1_795_000_000 * 10**9
    assert xml_values.parse_http_date("Wed, 18 Nov 2026 11:06:40 -0000") == 1_795_000_000 * 10**9
    for obsolete in ("Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"):
        assert xml_values.parse_http_date(obsolete) == 784_111_777 * 10**9  # RFC 850, asctime
    assert xml_values.parse_http_date("yesterday") is None
    assert xml_values.parse_http_date("Mon, 99 Jan 2020 00:00:00 GMT") is None
    assert xml_values.parse_http_date("") is None


def test_etag_quoting() -> None:
    assert xml_values.quote_etag("abc") == '"abc"'
    assert xml_values.quote_etag('"abc"') == '"abc"'
    assert xml_values.quote_etag("abc-3") == '"abc-3"'
    assert xml_values.unquote_etag(' "abc" ') == "abc"
    assert xml_values.unquote_etag('W/"abc"') == "abc"
    assert xml_values.unquote_etag("abc") == "abc"
    assert xml_values.unquote_etag('"') == '"'


# --- golden documents ------------------------------------------------------------------


def test_error_golden_and_read_by_botocore() -> None:
    body = xml_render.error("NoSuchKey", "gone & <away>", "/b/k", "RID1", Key="k", BucketName="b")
    assert body == (
        PROLOG + b"<Error><Code>NoSuchKey</Code><Message>gone &amp; &lt;away&gt;</Message>"
        b"<Key>k</Key><BucketName>b</BucketName><Resource>/b/k</Resource>"
        b"<RequestId>RID1</RequestId></Error>"
    )
    error = parsed("GetObject", body, status=404)["Error"]
    assert error == {
        "Code": "NoSuchKey",
        "Message": "gone & <away>",
        "Key": "k",
        "BucketName": "b",
        "Resource": "/b/k",
    }  # botocore takes RequestId from the x-amz-request-id header, not the body
    assert b"<Resource>" not in xml_render.error("InternalError", "x", None, "RID")


def test_list_objects_v2_golden() -> None:
    body = xml_listing.list_objects_v2(
        xml_listing.Listing("b", delimiter="/", max_keys=2),
        objects=[obj("k1")],
        common_prefixes=["d/"],
    )
    assert body == (
        PROLOG + b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Name>b</Name><Prefix /><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
        b"<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>"
        b"<Contents><Key>k1</Key><LastModified>2026-11-18T11:06:40.123Z</LastModified>"
        b'<ETag>"abc"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>'
        b"<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListBucketResult>"
    )


def test_delete_result_golden() -> None:
    body = xml_render.delete_result([("k", None, True, "v9")], [("e", "v1", "AccessDenied", "no")])
    assert body == (
        PROLOG + b'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Deleted><Key>k</Key><DeleteMarker>true</DeleteMarker>"
        b"<DeleteMarkerVersionId>v9</DeleteMarkerVersionId></Deleted>"
        b"<Error><Key>e</Key><VersionId>v1</VersionId><Code>AccessDenied</Code>"
        b"<Message>no</Message></Error></DeleteResult>"
    )


RENDERED = {
    "list_buckets": lambda: xml_render.list_buckets("o", None, []),
    "location": lambda: xml_render.location("eu-west-1"),
    "versioning": lambda: xml_render.versioning(None),
    "list_objects_v1": lambda: xml_listing.list_objects_v1(xml_listing.Listing("b"), objects=[]),
    "list_object_versions": lambda: xml_listing.list_object_versions(
        xml_listing.Listing("b"), entries=[]
    ),
    "copy_object_result": lambda: xml_render.copy_object_result("e", 0),
    "copy_part_result": lambda: xml_render.copy_part_result("e", 0),
    "get_object_attributes": lambda: xml_render.get_object_attributes(object_size=1),
    "initiate_multipart_upload": lambda: xml_render.initiate_multipart_upload("b", "k", "u"),
    "complete_multipart_upload": lambda: xml_render.complete_multipart_upload(
        "/b/k", "b", "k", "e"
    ),
    "list_parts": lambda: xml_render.list_parts("b", "k", "u", parts=[]),
    "list_multipart_uploads": lambda: xml_listing.list_multipart_uploads(
        xml_listing.Listing("b"), uploads=[]
    ),
    "tagging": lambda: xml_render.tagging([]),
    "access_control_policy": lambda: xml_render.access_control_policy("o", None, []),
    "cors_configuration": lambda: xml_render.cors_configuration([]),
}


@pytest.mark.parametrize("render", RENDERED.values(), ids=list(RENDERED))
def test_every_response_has_the_prolog_and_the_s3_namespace(render: Callable[[], bytes]) -> None:
    body = render()
    assert body.startswith(PROLOG)
    assert ET.fromstring(body).tag.startswith(NS)


# --- buckets ---------------------------------------------------------------------------


def test_list_buckets() -> None:
    buckets = [BucketInfo(BucketName("alpha"), "o", T0_NS), BucketInfo(BucketName("beta"), "o", 0)]
    result = parsed("ListBuckets", xml_render.list_buckets("c0ffee", "ops", buckets, region="r1"))
    assert result["Owner"] == {"ID": "c0ffee", "DisplayName": "ops"}
    assert result["Buckets"] == [
        {"Name": "alpha", "CreationDate": T0, "BucketRegion": "r1"},
        {
            "Name": "beta",
            "CreationDate": datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),
            "BucketRegion": "r1",
        },
    ]
    assert (
        "DisplayName" not in parsed("ListBuckets", xml_render.list_buckets("o", None, []))["Owner"]
    )


@pytest.mark.parametrize(
    ("region", "expected"), [("us-east-1", None), (None, None), ("eu-1", "eu-1")]
)
def test_location_as_botocore_reads_it(region: str | None, expected: str | None) -> None:
    # GetBucketLocation cannot be modelled; botocore reads the root's text in a handler.
    result: dict[str, Any] = {}
    response = SimpleNamespace(raw=object(), content=xml_render.location(region))
    handlers.parse_get_bucket_location(result, response)
    assert result["LocationConstraint"] == expected


def test_versioning_round_trip() -> None:
    for status in ("Enabled", "Suspended"):
        assert parsed("GetBucketVersioning", xml_render.versioning(status))["Status"] == status
        body = request_body(
            "PutBucketVersioning", {"Bucket": "b", "VersioningConfiguration": {"Status": status}}
        )
        assert xml_parse.parse_versioning(body) == status
    assert (
        parsed("GetBucketVersioning", xml_render.versioning(Versioning.ENABLED))["Status"]
        == "Enabled"
    )
    assert "Status" not in parsed("GetBucketVersioning", xml_render.versioning(Versioning.DISABLED))
    assert "Status" not in parsed("GetBucketVersioning", xml_render.versioning(None))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>",
            "IllegalVersioningConfigurationException",
        ),
        (b"<VersioningConfiguration/>", "IllegalVersioningConfigurationException"),
        (
            b"<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Enabled</MfaDelete></VersioningConfiguration>",
            "NotImplemented",
        ),
        (
            b"<VersioningConfiguration><Status><x/></Status></VersioningConfiguration>",
            "MalformedXML",
        ),
        (
            b"<VersioningConfiguration><Status>Enabled</Status><Status>Enabled</Status></VersioningConfiguration>",
            "MalformedXML",
        ),
        (b"<Versioning><Status>Enabled</Status></Versioning>", "MalformedXML"),
    ],
)
def test_versioning_refusals(body: bytes, code: str) -> None:
    assert code_of(lambda: xml_parse.parse_versioning(body)) == code


def test_create_bucket() -> None:
    assert xml_parse.parse_create_bucket(request_body("CreateBucket", {"Bucket": "b"})) is None
    body = request_body(
        "CreateBucket",
        {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
    )
    assert xml_parse.parse_create_bucket(body) == "eu-west-1"
    assert xml_parse.parse_create_bucket(b"  \n") is None
    assert xml_parse.parse_create_bucket(b"<CreateBucketConfiguration/>") is None
    empty = b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"
    assert xml_parse.parse_create_bucket(empty) is None
    assert code_of(lambda: xml_parse.parse_create_bucket(b"<Bucket/>")) == "MalformedXML"


# --- listings --------------------------------------------------------------------------


def test_list_objects_v2_read_by_botocore() -> None:
    objects = [obj("a/1", checksums=(("crc32c", "AAAAAA=="),)), obj("a/2", etag=None, size=0)]
    body = xml_listing.list_objects_v2(
        xml_listing.Listing("b", prefix="a/", delimiter="/", max_keys=3),
        objects=objects,
        common_prefixes=["a/d/"],
        is_truncated=True,
        continuation_token="tok1",
        next_continuation_token="tok2",
        start_after="a/0",
        fetch_owner=True,
        owner=OWNER,
    )
    result = parsed("ListObjectsV2", body)
    assert {k: result[k] for k in ("Name", "Prefix", "Delimiter", "MaxKeys", "KeyCount")} == {
        "Name": "b",
        "Prefix": "a/",
        "Delimiter": "/",
        "MaxKeys": 3,
        "KeyCount": 3,
    }
    assert result["IsTruncated"] is True
    assert (result["ContinuationToken"], result["NextContinuationToken"]) == ("tok1", "tok2")
    assert result["StartAfter"] == "a/0"
    assert "EncodingType" not in result
    assert result["Contents"] == [
        {
            "Key": "a/1",
            "LastModified": T0,
            "ETag": '"abc"',
            "ChecksumAlgorithm": ["CRC32C"],
            "Size": 3,
            "Owner": {"ID": "c0ffee", "DisplayName": "ops"},
            "StorageClass": "STANDARD",
        },
        {
            "Key": "a/2",
            "LastModified": T0,
            "Size": 0,
            "Owner": {"ID": "c0ffee", "DisplayName": "ops"},
            "StorageClass": "STANDARD",
        },
    ]
    assert result["CommonPrefixes"] == [{"Prefix": "a/d/"}]
    unowned = parsed(
        "ListObjectsV2",
        xml_listing.list_objects_v2(xml_listing.Listing("b"), objects=objects, owner=OWNER),
    )
    assert all("Owner" not in entry for entry in unowned["Contents"])
    assert unowned["KeyCount"] == 2
    assert "Delimiter" not in unowned and "StartAfter" not in unowned


def test_list_objects_v2_url_encoding_round_trips_through_botocore() -> None:
    body = xml_listing.list_objects_v2(
        xml_listing.Listing("b", prefix="", delimiter=" ", encoding_type="url"),
        objects=[obj(key) for key in AWKWARD_KEYS],
        common_prefixes=["p q/"],
        start_after="a b",
    )
    assert b"<Key>a+b%2Bc/d%3De</Key>" in body  # as AWS: "+" for space, "/" kept
    result = parsed("ListObjectsV2", body)
    assert result["EncodingType"] == "url"
    handlers.decode_list_object_v2(result, {"encoding_type_auto_set": True})
    assert [entry["Key"] for entry in result["Contents"]] == list(AWKWARD_KEYS)
    assert result["CommonPrefixes"] == [{"Prefix": "p q/"}]
    assert (result["Delimiter"], result["StartAfter"]) == (" ", "a b")


def test_xml_invalid_characters_never_break_the_document() -> None:
    key = "odd\ufffekey"  # valid UTF-8 a store may hold, but XML 1.0 cannot carry it
    plain = parsed(
        "ListObjectsV2",
        xml_listing.list_objects_v2(xml_listing.Listing("b", prefix="\x01"), objects=[obj(key)]),
    )
    assert plain["Contents"][0]["Key"] == "odd\ufffdkey"
    assert plain["Prefix"] == "\ufffd"
    encoded = parsed(
        "ListObjectsV2",
        xml_listing.list_objects_v2(
            xml_listing.Listing("b", encoding_type="url"), objects=[obj(key)]
        ),
    )
    handlers.decode_list_object_v2(encoded, {"encoding_type_auto_set": True})
    assert encoded["Contents"][0]["Key"] == key  # exact, as AWS tells clients to ask for
    error = parsed(
        "GetObject", xml_render.error("InvalidArgument", "bad \x00\udcff", None, "r"), 400
    )
    assert error["Error"]["Message"] == "bad \ufffd\ufffd"


def test_encoding_type_other_than_url_is_refused() -> None:
    assert (
        code_of(
            lambda: xml_listing.list_objects_v2(
                xml_listing.Listing("b", encoding_type="base64"), objects=[]
            )
        )
        == "InvalidArgument"
    )
    assert code_of(lambda: xml_listing.check_encoding_type("URL")) == "InvalidArgument"
    assert xml_listing.check_encoding_type(None) is None


def test_list_objects_v1_markers() -> None:
    objects = [obj("k1"), obj("k2")]
    truncated = parsed(
        "ListObjects",
        xml_listing.list_objects_v1(
            xml_listing.Listing("b", delimiter="/"),
            objects=objects,
            is_truncated=True,
            marker="k0",
            next_marker="k2",
            owner=OWNER,
        ),
    )
    assert (truncated["Marker"], truncated["NextMarker"], truncated["IsTruncated"]) == (
        "k0",
        "k2",
        True,
    )
    assert truncated["Contents"][0]["Owner"] == {"ID": "c0ffee", "DisplayName": "ops"}
    # No NextMarker without a delimiter, or on the last page: as AWS.
    no_delimiter = parsed(
        "ListObjects",
        xml_listing.list_objects_v1(
            xml_listing.Listing("b"), objects=objects, is_truncated=True, next_marker="k2"
        ),
    )
    assert "NextMarker" not in no_delimiter and no_delimiter["Marker"] == ""
    last = parsed(
        "ListObjects",
        xml_listing.list_objects_v1(
            xml_listing.Listing("b", delimiter="/"), objects=objects, next_marker="k2"
        ),
    )
    assert "NextMarker" not in last
    assert "KeyCount" not in last


def test_listing_from_a_store_page() -> None:
    page = ListPage((obj("a/1"),), ("a/d/",), True, "a/d/")
    v2 = parsed(
        "ListObjectsV2",
        xml_listing.list_objects_v2(xml_listing.Listing("b", delimiter="/"), page=page),
    )
    assert [entry["Key"] for entry in v2["Contents"]] == ["a/1"]
    assert (v2["CommonPrefixes"], v2["IsTruncated"], v2["KeyCount"]) == (
        [{"Prefix": "a/d/"}],
        True,
        2,
    )
    assert xml_listing.decode_continuation_token(v2["NextContinuationToken"]) == "a/d/"
    v1 = parsed(
        "ListObjects",
        xml_listing.list_objects_v1(xml_listing.Listing("b", delimiter="/"), page=page),
    )
    assert (v1["NextMarker"], v1["IsTruncated"]) == ("a/d/", True)
    last = ListPage((obj("z"),), (), False, None)
    assert "NextContinuationToken" not in parsed(
        "ListObjectsV2", xml_listing.list_objects_v2(xml_listing.Listing("b"), page=last)
    )
    with pytest.raises(ValueError, match="not both"):
        xml_listing.list_objects_v2(xml_listing.Listing("b"), page=page, objects=[obj("x")])


@pytest.mark.parametrize("position", ["", "a", "dir/ünï©ødé ☃/", "k" * 1024, "odd\ufffekey"])
def test_continuation_tokens_round_trip(position: str) -> None:
    token = xml_listing.encode_continuation_token(position)
    assert token.isascii() and "/" not in token and "+" not in token
    if position:
        assert xml_listing.decode_continuation_token(token) == position


@pytest.mark.parametrize("token", ["", "!!!", "a", "_w==", "QQ" * 3000])
def test_foreign_continuation_tokens_are_refused(token: str) -> None:
    assert code_of(lambda: xml_listing.decode_continuation_token(token)) == "InvalidArgument"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"Bucket": "b", "Key": "a b+c/ü?#%&="}, ("b", "a b+c/ü?#%&=", None)),
        ({"Bucket": "b", "Key": "k", "VersionId": "v+1.x"}, ("b", "k", "v+1.x")),
        ("b/dir/x y", ("b", "dir/x y", None)),
        (
            "/b/k?versionId=00017950000000000000abcdef012345",
            ("b", "k", "00017950000000000000abcdef012345"),
        ),
    ],
)
def test_parse_copy_source_as_botocore_sends_it(
    source: str | dict[str, str], expected: tuple[str, str, str | None]
) -> None:
    params: dict[str, Any] = {"CopySource": source}
    handlers.handle_copy_source_param(params)
    assert xml_parse.parse_copy_source(params["CopySource"]) == expected


@pytest.mark.parametrize("header", ["", "/", "bucket", "bucket/", "/k", "b/k?versionId=", "b/%ff"])
def test_parse_copy_source_refusals(header: str) -> None:
    assert code_of(lambda: xml_parse.parse_copy_source(header)) == "InvalidArgument"


def test_list_objects_v1_url_encoding() -> None:
    body = xml_listing.list_objects_v1(
        xml_listing.Listing("b", prefix="x y", delimiter="/", encoding_type="url"),
        objects=[obj("x y")],
        common_prefixes=["c d/"],
        is_truncated=True,
        marker="a b",
        next_marker="c d/",
    )
    result = parsed("ListObjects", body)
    assert result["Prefix"] == "x+y"  # encoded, as AWS documents (botocore leaves it so)
    handlers.decode_list_object(result, {"encoding_type_auto_set": True})
    assert (result["Marker"], result["NextMarker"]) == ("a b", "c d/")
    assert result["Contents"][0]["Key"] == "x y"
    assert result["CommonPrefixes"] == [{"Prefix": "c d/"}]


def test_list_object_versions() -> None:
    entries = [
        obj("a", version_id="v3", delete_marker=True, etag=None, size=0),
        obj("a", version_id="v2", is_latest=False),
        obj("b c", version_id="null"),
    ]
    body = xml_listing.list_object_versions(
        xml_listing.Listing("bk", encoding_type="url"),
        entries=entries,
        is_truncated=True,
        key_marker="0",
        version_id_marker="v0",
        next_key_marker="b c",
        next_version_id_marker="null",
        owner=OWNER,
    )
    order = [
        (child.tag[len(NS) :], child.findtext(NS + "VersionId")) for child in ET.fromstring(body)
    ]
    assert [entry for entry in order if entry[0] in ("Version", "DeleteMarker")] == [
        ("DeleteMarker", "v3"),
        ("Version", "v2"),
        ("Version", "null"),
    ]
    result = parsed("ListObjectVersions", body)
    handlers.decode_list_object_versions(result, {"encoding_type_auto_set": True})
    assert result["DeleteMarkers"] == [
        {
            "Key": "a",
            "VersionId": "v3",
            "IsLatest": True,
            "LastModified": T0,
            "Owner": {"ID": "c0ffee", "DisplayName": "ops"},
        }
    ]
    assert [
        (v["Key"], v["VersionId"], v["IsLatest"], v["ETag"], v["Size"]) for v in result["Versions"]
    ] == [
        ("a", "v2", False, '"abc"', 3),
        ("b c", "null", True, '"abc"', 3),
    ]
    assert (result["KeyMarker"], result["VersionIdMarker"]) == ("0", "v0")
    assert (result["NextKeyMarker"], result["NextVersionIdMarker"]) == ("b c", "null")
    assert result["IsTruncated"] is True


# --- DeleteObjects ---------------------------------------------------------------------


def test_parse_delete_objects_from_botocore() -> None:
    objects = [{"Key": key} for key in AWKWARD_KEYS] + [{"Key": "v", "VersionId": "3/L4kq"}]
    body = request_body(
        "DeleteObjects", {"Bucket": "b", "Delete": {"Objects": objects, "Quiet": True}}
    )
    quiet, entries = xml_parse.parse_delete_objects(body)
    assert quiet is True
    assert entries == [(key, None) for key in AWKWARD_KEYS] + [("v", "3/L4kq")]
    body = request_body("DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "k"}]}})
    assert xml_parse.parse_delete_objects(body) == (False, [("k", None)])


def test_parse_delete_objects_limits() -> None:
    def body(count: int) -> bytes:
        return b"<Delete>" + b"<Object><Key>k</Key></Object>" * count + b"</Delete>"

    assert len(xml_parse.parse_delete_objects(body(1000))[1]) == 1000
    assert code_of(lambda: xml_parse.parse_delete_objects(body(1001))) == "MalformedXML"
    assert code_of(lambda: xml_parse.parse_delete_objects(body(0))) == "MalformedXML"
    missing_key = b"<Delete><Object><VersionId>v</VersionId></Object></Delete>"
    assert code_of(lambda: xml_parse.parse_delete_objects(missing_key)) == "MalformedXML"
    odd_quiet = b"<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>"
    assert code_of(lambda: xml_parse.parse_delete_objects(odd_quiet)) == "MalformedXML"


def test_delete_result_read_by_botocore() -> None:
    body = xml_render.delete_result(
        [("a", "v1", False, None), ("b", None, True, "dm1"), ("c", "dm2", True, "dm2")],
        [("d&e", None, "AccessDenied", "Access Denied")],
    )
    result = parsed("DeleteObjects", body)
    assert result["Deleted"] == [
        {"Key": "a", "VersionId": "v1"},
        {"Key": "b", "DeleteMarker": True, "DeleteMarkerVersionId": "dm1"},
        {"Key": "c", "VersionId": "dm2", "DeleteMarker": True, "DeleteMarkerVersionId": "dm2"},
    ]
    assert result["Errors"] == [{"Key": "d&e", "Code": "AccessDenied", "Message": "Access Denied"}]


# --- copies, attributes ----------------------------------------------------------------


def test_copy_results_read_by_botocore() -> None:
    body = xml_render.copy_object_result(
        "abc", T0_NS, {"crc32c": "AAAAAA==", "SHA256": "c2hh"}, checksum_type="FULL_OBJECT"
    )
    result = parsed("CopyObject", body)["CopyObjectResult"]
    assert result == {
        "ETag": '"abc"',
        "LastModified": T0,
        "ChecksumCRC32C": "AAAAAA==",
        "ChecksumSHA256": "c2hh",
        "ChecksumType": "FULL_OBJECT",
    }
    part = parsed("UploadPartCopy", xml_render.copy_part_result("def", T0_NS, (("crc32", "AAAA"),)))
    assert part["CopyPartResult"] == {"ETag": '"def"', "LastModified": T0, "ChecksumCRC32": "AAAA"}
    with pytest.raises(ValueError, match="unknown checksum"):
        xml_render.copy_object_result("abc", 0, {"adler32": "x"})


def test_get_object_attributes_read_by_botocore() -> None:
    parts = xml_render.ObjectParts(
        total_parts_count=3,
        parts=(xml_render.Part(2, 100, checksums=(("crc32c", "AAAA"),)), xml_render.Part(3, 50)),
        part_number_marker=1,
        next_part_number_marker=3,
        max_parts=2,
        is_truncated=False,
    )
    body = xml_render.get_object_attributes(
        etag='"abc-3"',
        checksums={"crc32c": "BBBB"},
        checksum_type="COMPOSITE",
        object_parts=parts,
        storage_class="STANDARD",
        object_size=250,
    )
    result = parsed("GetObjectAttributes", body)
    assert result["ETag"] == "abc-3"  # unquoted in this one body, as AWS
    assert result["Checksum"] == {"ChecksumCRC32C": "BBBB", "ChecksumType": "COMPOSITE"}
    assert result["ObjectParts"] == {
        "TotalPartsCount": 3,
        "PartNumberMarker": 1,
        "NextPartNumberMarker": 3,
        "MaxParts": 2,
        "IsTruncated": False,
        "Parts": [
            {"PartNumber": 2, "Size": 100, "ChecksumCRC32C": "AAAA"},
            {"PartNumber": 3, "Size": 50},
        ],
    }
    assert (result["StorageClass"], result["ObjectSize"]) == ("STANDARD", 250)
    only_size = parsed("GetObjectAttributes", xml_render.get_object_attributes(object_size=0))
    assert {k for k in only_size if k != "ResponseMetadata"} == {"ObjectSize"}


# --- multipart -------------------------------------------------------------------------


def test_initiate_and_complete_read_by_botocore() -> None:
    result = parsed(
        "CreateMultipartUpload", xml_render.initiate_multipart_upload("b", "k y", "up1")
    )
    assert (result["Bucket"], result["Key"], result["UploadId"]) == ("b", "k y", "up1")
    body = xml_render.complete_multipart_upload(
        "http://host/b/k", "b", "k", "abc-2", {"crc32c": "CCCC"}, checksum_type="COMPOSITE"
    )
    result = parsed("CompleteMultipartUpload", body)
    assert {k: v for k, v in result.items() if k != "ResponseMetadata"} == {
        "Location": "http://host/b/k",
        "Bucket": "b",
        "Key": "k",
        "ETag": '"abc-2"',
        "ChecksumCRC32C": "CCCC",
        "ChecksumType": "COMPOSITE",
    }


def test_parse_complete_multipart_from_botocore() -> None:
    parts = [
        {"PartNumber": 1, "ETag": '"e1"', "ChecksumCRC32C": "AAAA"},
        {"PartNumber": 2, "ETag": "e2"},
        {"PartNumber": 10000, "ETag": '"e3"', "ChecksumSHA1": "c2hh", "ChecksumCRC64NVME": "Q1JD"},
    ]
    body = request_body(
        "CompleteMultipartUpload",
        {"Bucket": "b", "Key": "k", "UploadId": "u", "MultipartUpload": {"Parts": parts}},
    )
    assert xml_parse.parse_complete_multipart(body) == [
        (1, "e1", {"crc32c": "AAAA"}),
        (2, "e2", {}),
        (10000, "e3", {"crc64nvme": "Q1JD", "sha1": "c2hh"}),
    ]


@pytest.mark.parametrize(
    ("numbers", "code"),
    [
        (["2", "1"], "InvalidPartOrder"),
        (["1", "1"], "InvalidPartOrder"),
        (["0"], "InvalidArgument"),
        (["10001"], "InvalidArgument"),
        (["-1"], "InvalidArgument"),
        (["one"], "MalformedXML"),
        (["1_0"], "MalformedXML"),
        ([], "MalformedXML"),
    ],
)
def test_complete_multipart_refusals(numbers: list[str], code: str) -> None:
    body = "<CompleteMultipartUpload>"
    for number in numbers:
        body += f"<Part><PartNumber>{number}</PartNumber><ETag>e</ETag></Part>"
    body += "</CompleteMultipartUpload>"
    assert code_of(lambda: xml_parse.parse_complete_multipart(body.encode())) == code


def test_complete_multipart_needs_etag() -> None:
    body = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
    body += b"</CompleteMultipartUpload>"
    assert code_of(lambda: xml_parse.parse_complete_multipart(body)) == "MalformedXML"


def test_list_parts_read_by_botocore() -> None:
    parts = [
        xml_render.Part(
            2, 5 * 1024 * 1024, etag="e2", mtime_ns=T0_NS, checksums=(("crc32c", "AAAA"),)
        ),
        xml_render.Part(3, 1, etag='"e3"', mtime_ns=T0_NS),
    ]
    body = xml_render.list_parts(
        "b",
        "k",
        "up1",
        parts=parts,
        part_number_marker=1,
        next_part_number_marker=3,
        max_parts=2,
        is_truncated=True,
        owner=OWNER,
        initiator=xml_values.Owner("c0ffee"),
        checksum_algorithm="CRC32C",
        checksum_type="COMPOSITE",
    )
    result = parsed("ListParts", body)
    assert (result["Bucket"], result["Key"], result["UploadId"]) == ("b", "k", "up1")
    assert (result["PartNumberMarker"], result["NextPartNumberMarker"], result["MaxParts"]) == (
        1,
        3,
        2,
    )
    assert result["IsTruncated"] is True
    assert result["Owner"] == {"ID": "c0ffee", "DisplayName": "ops"}
    assert result["Initiator"] == {"ID": "c0ffee"}
    assert (result["StorageClass"], result["ChecksumAlgorithm"], result["ChecksumType"]) == (
        "STANDARD",
        "CRC32C",
        "COMPOSITE",
    )
    assert result["Parts"] == [
        {
            "PartNumber": 2,
            "LastModified": T0,
            "ETag": '"e2"',
            "Size": 5 * 1024 * 1024,
            "ChecksumCRC32C": "AAAA",
        },
        {"PartNumber": 3, "LastModified": T0, "ETag": '"e3"', "Size": 1},
    ]


def test_list_multipart_uploads_read_by_botocore() -> None:
    uploads = [
        xml_listing.Upload(
            "a b", "u1", T0_NS, owner=OWNER, initiator=OWNER, checksum_algorithm="CRC32"
        ),
        xml_listing.Upload("c", "u2", 0),
    ]
    body = xml_listing.list_multipart_uploads(
        xml_listing.Listing("b", delimiter="/", max_keys=3, encoding_type="url"),
        uploads=uploads,
        common_prefixes=["d/"],
        is_truncated=True,
        key_marker="a",
        upload_id_marker="u0",
        next_key_marker="c",
        next_upload_id_marker="u2",
    )
    result = parsed("ListMultipartUploads", body)
    assert (result["KeyMarker"], result["UploadIdMarker"]) == ("a", "u0")
    assert (result["NextKeyMarker"], result["NextUploadIdMarker"]) == ("c", "u2")
    assert (result["MaxUploads"], result["IsTruncated"], result["EncodingType"]) == (3, True, "url")
    assert result["Uploads"][0] == {
        "Key": "a+b",  # url-encoded as asked; botocore decodes nothing here
        "UploadId": "u1",
        "Initiator": {"ID": "c0ffee", "DisplayName": "ops"},
        "Owner": {"ID": "c0ffee", "DisplayName": "ops"},
        "StorageClass": "STANDARD",
        "Initiated": T0,
        "ChecksumAlgorithm": "CRC32",
    }
    assert result["Uploads"][1]["Key"] == "c"
    assert result["CommonPrefixes"] == [{"Prefix": "d/"}]


# --- tagging ---------------------------------------------------------------------------


def test_tagging_round_trip() -> None:
    tags = [("project", "objfs"), ("empty", ""), ("odd <&>", "ünï ☃")]
    assert parsed("GetObjectTagging", xml_render.tagging(tags))["TagSet"] == [
        {"Key": k, "Value": v} for k, v in tags
    ]
    tag_set = [{"Key": k, "Value": v} for k, v in tags]
    for operation in ("PutObjectTagging", "PutBucketTagging"):
        params: dict[str, Any] = {"Bucket": "b", "Tagging": {"TagSet": tag_set}}
        if operation == "PutObjectTagging":
            params["Key"] = "k"
        assert xml_parse.parse_tagging(request_body(operation, params)) == tags
    empty = request_body("PutObjectTagging", {"Bucket": "b", "Key": "k", "Tagging": {"TagSet": []}})
    assert xml_parse.parse_tagging(empty) == []


def _tagging_body(tags: list[tuple[str, str]]) -> bytes:
    tag_set = [{"Key": k, "Value": v} for k, v in tags]
    return request_body("PutBucketTagging", {"Bucket": "b", "Tagging": {"TagSet": tag_set}})


def test_tagging_limits() -> None:
    ten = [(f"k{i}", "v") for i in range(10)]
    assert len(xml_parse.parse_tagging(_tagging_body(ten))) == 10
    eleven = _tagging_body([*ten, ("k10", "v")])
    assert code_of(lambda: xml_parse.parse_tagging(eleven)) == "InvalidTag"
    fifty = [(f"k{i}", "v") for i in range(50)]
    assert (
        len(xml_parse.parse_tagging(_tagging_body(fifty), max_tags=xml_parse.BUCKET_TAGS_MAX)) == 50
    )
    fifty_one = _tagging_body([*fifty, ("k50", "v")])
    assert (
        code_of(lambda: xml_parse.parse_tagging(fifty_one, max_tags=xml_parse.BUCKET_TAGS_MAX))
        == "InvalidTag"
    )
    assert xml_parse.parse_tagging(_tagging_body([("k" * 128, "v" * 256)])) == [
        ("k" * 128, "v" * 256)
    ]
    for bad in (
        [("k" * 129, "v")],
        [("k", "v" * 257)],
        [("dup", "1"), ("dup", "2")],
        [("aws:created", "x")],
    ):
        body = _tagging_body(bad)
        assert code_of(partial(xml_parse.parse_tagging, body)) == "InvalidTag", bad
    assert code_of(lambda: xml_parse.check_tags([("", "v")], max_tags=10)) == "InvalidTag"


@pytest.mark.parametrize(
    "body",
    [
        b"<Tagging/>",
        b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
        b"<Tagging><TagSet/><TagSet/></Tagging>",
    ],
)
def test_tagging_malformed(body: bytes) -> None:
    assert code_of(lambda: xml_parse.parse_tagging(body)) == "MalformedXML"


# --- ACL -------------------------------------------------------------------------------


def test_access_control_policy_round_trip() -> None:
    grants: list[xml_values.Grant] = [
        ("CanonicalUser", "c0ffee", "ops", "FULL_CONTROL"),
        ("Group", ALL_USERS, None, "READ"),
    ]
    result = parsed("GetBucketAcl", xml_render.access_control_policy("c0ffee", "ops", grants))
    assert result["Owner"] == {"ID": "c0ffee", "DisplayName": "ops"}
    assert result["Grants"] == [
        {
            "Grantee": {"Type": "CanonicalUser", "ID": "c0ffee", "DisplayName": "ops"},
            "Permission": "FULL_CONTROL",
        },
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
    ]
    body = request_body(
        "PutBucketAcl",
        {
            "Bucket": "b",
            "AccessControlPolicy": {
                "Owner": {"ID": "c0ffee", "DisplayName": "ops"},
                "Grants": [
                    {
                        "Grantee": {"Type": "CanonicalUser", "ID": "c0ffee", "DisplayName": "ops"},
                        "Permission": "FULL_CONTROL",
                    },
                    {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
                ],
            },
        },
    )
    assert xml_parse.parse_access_control_policy(body) == xml_parse.AccessControlPolicy(
        "c0ffee", "ops", tuple(grants)
    )


def _grant_body(grantee: str, permission: str = "READ") -> bytes:
    return (
        f'<AccessControlPolicy xmlns:xsi="{xml_values.XSI_NAMESPACE}"><AccessControlList><Grant>'
        f"{grantee}<Permission>{permission}</Permission></Grant></AccessControlList>"
        "</AccessControlPolicy>"
    ).encode()


def test_access_control_policy_refusals() -> None:
    user = '<Grantee xsi:type="CanonicalUser"><ID>x</ID></Grantee>'
    assert xml_parse.parse_access_control_policy(_grant_body(user)).grants == (
        ("CanonicalUser", "x", None, "READ"),
    )
    untyped = (
        "<Grantee><URI>" + ALL_USERS + "</URI></Grantee>"
    )  # the type follows from the children
    assert xml_parse.parse_access_control_policy(_grant_body(untyped)).grants == (
        ("Group", ALL_USERS, None, "READ"),
    )
    cases = [
        (_grant_body(user, "EVERYTHING"), "MalformedACLError"),
        (_grant_body('<Grantee xsi:type="CanonicalUser"></Grantee>'), "MalformedACLError"),
        (
            _grant_body('<Grantee xsi:type="Group"><URI>http://evil/</URI></Grantee>'),
            "InvalidArgument",
        ),
        (
            _grant_body(
                '<Grantee xsi:type="AmazonCustomerByEmail">'
                "<EmailAddress>a@b</EmailAddress></Grantee>"
            ),
            "NotImplemented",
        ),
        (_grant_body(""), "MalformedACLError"),
        (_grant_body(user + "</Grant><Grant>" + user), "MalformedACLError"),  # no Permission
        (
            _grant_body(f"{user}<Permission>READ</Permission></Grant><Grant>{user}" * 100),
            "MalformedACLError",
        ),  # 101 grants
    ]
    for body, code in cases:
        assert code_of(partial(xml_parse.parse_access_control_policy, body)) == code, body


# --- CORS ------------------------------------------------------------------------------


def test_cors_round_trip() -> None:
    rules = [
        xml_values.CorsRule(
            ("https://*.example.com",), ("GET", "HEAD"), ("*",), ("ETag",), 3000, "r1"
        ),
        xml_values.CorsRule(("*",), ("PUT", "POST", "DELETE")),
    ]
    result = parsed("GetBucketCors", xml_render.cors_configuration(rules))
    assert result["CORSRules"] == [
        {
            "ID": "r1",
            "AllowedHeaders": ["*"],
            "AllowedMethods": ["GET", "HEAD"],
            "AllowedOrigins": ["https://*.example.com"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3000,
        },
        {"AllowedMethods": ["PUT", "POST", "DELETE"], "AllowedOrigins": ["*"]},
    ]
    body = request_body(
        "PutBucketCors", {"Bucket": "b", "CORSConfiguration": {"CORSRules": result["CORSRules"]}}
    )
    assert xml_parse.parse_cors_configuration(body) == rules


def _cors_body(rule: str, count: int = 1) -> bytes:
    return (
        "<CORSConfiguration>" + f"<CORSRule>{rule}</CORSRule>" * count + "</CORSConfiguration>"
    ).encode()


GOOD_RULE = "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            _cors_body("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"),
            "InvalidRequest",
        ),
        (
            _cors_body("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>get</AllowedMethod>"),
            "InvalidRequest",
        ),
        (
            _cors_body("<AllowedOrigin>*.*.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"),
            "InvalidRequest",
        ),
        (_cors_body(GOOD_RULE + "<AllowedHeader>x-*-*</AllowedHeader>"), "InvalidRequest"),
        (_cors_body("<AllowedMethod>GET</AllowedMethod>"), "MalformedXML"),
        (_cors_body("<AllowedOrigin>*</AllowedOrigin>"), "MalformedXML"),
        (_cors_body(GOOD_RULE + "<MaxAgeSeconds>soon</MaxAgeSeconds>"), "MalformedXML"),
        (_cors_body(GOOD_RULE + "<MaxAgeSeconds>-1</MaxAgeSeconds>"), "MalformedXML"),
        (_cors_body(GOOD_RULE + "<ID>" + "i" * 256 + "</ID>"), "InvalidArgument"),
        (_cors_body(GOOD_RULE, count=101), "MalformedXML"),
        (b"<CORSConfiguration/>", "MalformedXML"),
    ],
)
def test_cors_refusals(body: bytes, code: str) -> None:
    assert code_of(lambda: xml_parse.parse_cors_configuration(body)) == code


def test_cors_hundred_rules_are_accepted() -> None:
    assert len(xml_parse.parse_cors_configuration(_cors_body(GOOD_RULE, count=100))) == 100


# --- hostile and odd request bodies ----------------------------------------------------

PARSERS: dict[str, Callable[[bytes], object]] = {
    "create_bucket": xml_parse.parse_create_bucket,
    "versioning": xml_parse.parse_versioning,
    "delete_objects": xml_parse.parse_delete_objects,
    "complete_multipart": xml_parse.parse_complete_multipart,
    "tagging": xml_parse.parse_tagging,
    "access_control_policy": xml_parse.parse_access_control_policy,
    "cors_configuration": xml_parse.parse_cors_configuration,
}
ROOTS = {
    "create_bucket": "CreateBucketConfiguration",
    "versioning": "VersioningConfiguration",
    "delete_objects": "Delete",
    "complete_multipart": "CompleteMultipartUpload",
    "tagging": "Tagging",
    "access_control_policy": "AccessControlPolicy",
    "cors_configuration": "CORSConfiguration",
}
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">'
        for i in range(10)
    )
    + "]><{root}>&lol9;</{root}>"
)
HOSTILE = {
    "billion_laughs": BILLION_LAUGHS,
    "external_entity": (
        '<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<{root}>&x;</{root}>"
    ),
    "parameter_entity": (
        '<!DOCTYPE {root} [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><{root}/>'
    ),
    "external_dtd": '<!DOCTYPE {root} SYSTEM "http://127.0.0.1:9/x.dtd"><{root}/>',
    "bare_doctype": "<!DOCTYPE {root}><{root}/>",
    "deep_wrong_root": "<a>" * 100_000 + "</a>" * 100_000,
    "not_xml": "this is not XML at all",
    "json": '{{"{root}": []}}',
    "truncated": "<{root}><Object><Key>k</Key>",
    "two_roots": "<{root}/><{root}/>",
    "wrong_root": "<Nope/>",
    "unbound_prefix": "<x:{root}/>",
    "unknown_encoding": '<?xml version="1.0" encoding="x-klingon"?><{root}/>',
    "undefined_entity": "<{root}>&nope;</{root}>",
}


@pytest.mark.parametrize("hostile", list(HOSTILE), ids=list(HOSTILE))
@pytest.mark.parametrize("name", list(PARSERS))
def test_hostile_bodies_are_malformed_xml(name: str, hostile: str) -> None:
    body = HOSTILE[hostile].replace("{root}", ROOTS[name]).replace("{{", "{").replace("}}", "}")
    started = time.monotonic()
    assert code_of(lambda: PARSERS[name](body.encode())) == "MalformedXML"
    assert time.monotonic() - started < 5  # nothing was expanded


@pytest.mark.parametrize("body", [b"\xff\xfe\x00\x01garbage", bytes(range(256)), b"<\x00D\x00/>"])
@pytest.mark.parametrize("name", list(PARSERS))
def test_binary_junk_is_malformed_xml(name: str, body: bytes) -> None:
    assert code_of(lambda: PARSERS[name](body)) == "MalformedXML"


@pytest.mark.parametrize("name", [n for n in PARSERS if n != "create_bucket"])
def test_empty_body_is_malformed_xml(name: str) -> None:
    assert code_of(lambda: PARSERS[name](b"")) == "MalformedXML"


def test_depth_is_harmless() -> None:
    deep = b"<a>" * 100_000 + b"</a>" * 100_000
    # Deep nesting inside an unknown element is ignored; inside a value it is refused.
    body = b"<Delete><Junk>" + deep + b"</Junk><Object><Key>k</Key></Object></Delete>"
    assert xml_parse.parse_delete_objects(body) == (False, [("k", None)])
    body = b"<Delete><Object><Key>" + deep + b"</Key></Object></Delete>"
    assert code_of(lambda: xml_parse.parse_delete_objects(body)) == "MalformedXML"


def test_namespaces_entities_and_comments_that_are_fine() -> None:
    # No namespace, a foreign one, predefined entities, character references, comments.
    for root in ("<Delete>", '<Delete xmlns="http://doc.s3.amazonaws.com/2006-03-01">'):
        body = f"{root}<!-- c --><Object><Key>a&amp;b&#x2603;&lt;</Key></Object></Delete>"
        assert xml_parse.parse_delete_objects(body.encode()) == (False, [("a&b☃<", None)])
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><Delete><Object><Key>ü</Key></Object></Delete>'
    assert xml_parse.parse_delete_objects(utf16.encode("utf-16")) == (False, [("ü", None)])
