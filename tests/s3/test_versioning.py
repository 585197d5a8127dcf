"""Versioning through boto3: version ids, delete markers, reads and deletes by
version, ListObjectVersions with markers, suspended buckets and the null version.

Method: a real node (s3_node.py); every answer is compared with what AWS
documents for the same sequence of calls.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


def error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = excinfo.value.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


def test_versions_markers_and_reads_by_version(s3: Any) -> None:
    s3.create_bucket(Bucket="versioned")
    assert "Status" not in s3.get_bucket_versioning(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="versioned")["Status"] == "Enabled"
    v1 = s3.put_object(Bucket="versioned", Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket="versioned", Key="k", Body=b"two")["VersionId"]
    assert v1 != v2 and v1 != "null"
    assert s3.get_object(Bucket="versioned", Key="k")["Body"].read() == b"two"
    assert s3.get_object(Bucket="versioned", Key="k", VersionId=v1)["Body"].read() == b"one"
    deleted = s3.delete_object(Bucket="versioned", Key="k")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="versioned", Key="k")
    assert error(excinfo) == (404, "NoSuchKey")
    assert (
        excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    )
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket="versioned", Key="k", VersionId=marker)
    assert error(excinfo)[0] == 405
    assert s3.list_objects_v2(Bucket="versioned").get("Contents", []) == []
    listing = s3.list_object_versions(Bucket="versioned")
    assert [(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]] == [
        (v2, False),
        (v1, False),
    ]
    assert [(m["VersionId"], m["IsLatest"]) for m in listing["DeleteMarkers"]] == [(marker, True)]
    s3.delete_object(Bucket="versioned", Key="k", VersionId=marker)  # undelete
    assert s3.get_object(Bucket="versioned", Key="k")["Body"].read() == b"two"
    s3.delete_object(Bucket="versioned", Key="k", VersionId=v2)
    assert s3.get_object(Bucket="versioned", Key="k")["Body"].read() == b"one"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="versioned", Key="k", VersionId="00000000000000000000nope")
    assert error(excinfo)[0] == 404


def test_list_object_versions_pages_with_markers_and_delimiter(s3: Any) -> None:
    s3.create_bucket(Bucket="vpages")
    s3.put_bucket_versioning(Bucket="vpages", VersioningConfiguration={"Status": "Enabled"})
    expected: list[tuple[str, str]] = []
    for key in ["a", "b", "dir/x", "dir/y", "c"]:
        ids = [
            s3.put_object(Bucket="vpages", Key=key, Body=key.encode() * n)["VersionId"]
            for n in (1, 2, 3)
        ]
        expected.extend((key, vid) for vid in reversed(ids))
    expected.sort(key=lambda item: item[0])  # keys in order, newest first within a key
    paginator = s3.get_paginator("list_object_versions")
    seen = [
        (v["Key"], v["VersionId"])
        for page in paginator.paginate(Bucket="vpages", PaginationConfig={"PageSize": 2})
        for v in page.get("Versions", [])
    ]
    assert seen == expected
    page = s3.list_object_versions(Bucket="vpages", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in page["Versions"]} == {"a", "b", "c"}


def test_suspended_versioning_overwrites_the_null_version(s3: Any) -> None:
    s3.create_bucket(Bucket="suspended")
    s3.put_object(Bucket="suspended", Key="k", Body=b"before")  # the null version
    s3.put_bucket_versioning(Bucket="suspended", VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket="suspended", Key="k", Body=b"versioned")["VersionId"]
    s3.put_bucket_versioning(Bucket="suspended", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="suspended", Key="k", Body=b"null again")
    versions = s3.list_object_versions(Bucket="suspended")["Versions"]
    assert sorted(v["VersionId"] for v in versions) == sorted([kept, "null"])
    assert (
        s3.get_object(Bucket="suspended", Key="k", VersionId="null")["Body"].read() == b"null again"
    )
    assert s3.get_object(Bucket="suspended", Key="k", VersionId=kept)["Body"].read() == b"versioned"
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_versioning(Bucket="suspended", VersioningConfiguration={"Status": "Bogus"})
    assert error(excinfo)[0] == 400
