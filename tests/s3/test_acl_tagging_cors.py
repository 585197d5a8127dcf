"""ACLs (canned and grants, bucket and object, anonymous access), tagging (bucket and
object) and CORS (rules, preflight, headers on actual requests) through boto3 and
raw HTTP against a real node.
"""

from __future__ import annotations

from typing import Any

import pytest
import urllib3
from botocore.exceptions import ClientError
from s3_node import Node

HTTP = urllib3.PoolManager()


def code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def anonymous(method: str, url: str, headers: dict[str, str] | None = None) -> Any:
    return HTTP.request(method, url, headers=headers, timeout=10, retries=False)


def test_public_read_object_and_bucket_for_anonymous_and_other_users(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="acls")
    s3.put_object(Bucket="acls", Key="public", Body=b"for all", ACL="public-read")
    s3.put_object(Bucket="acls", Key="private", Body=b"owner only")
    assert anonymous("GET", f"{node.endpoint}/acls/public").data == b"for all"
    assert anonymous("GET", f"{node.endpoint}/acls/private").status == 403
    assert anonymous("GET", f"{node.endpoint}/acls").status == 403  # listing is private
    grants = s3.get_object_acl(Bucket="acls", Key="public")["Grants"]
    assert {(g["Grantee"].get("URI"), g["Permission"]) for g in grants} >= {
        ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")
    }
    s3.put_bucket_acl(Bucket="acls", ACL="public-read")
    listing = anonymous("GET", f"{node.endpoint}/acls?list-type=2")
    assert listing.status == 200 and b"<Key>private</Key>" in listing.data
    assert anonymous("GET", f"{node.endpoint}/acls/private").status == 403  # objects stay private
    assert anonymous("PUT", f"{node.endpoint}/acls/new").status == 403
    user, bob = node.create_user("bob-acl")
    with pytest.raises(ClientError) as excinfo:
        bob.get_object(Bucket="acls", Key="private")
    assert code(excinfo) == "AccessDenied"
    s3.put_object_acl(Bucket="acls", Key="private", GrantRead=f'id="{user.canonical_id}"')
    assert bob.get_object(Bucket="acls", Key="private")["Body"].read() == b"owner only"
    with pytest.raises(ClientError) as excinfo:
        bob.put_object(Bucket="acls", Key="bobs", Body=b"x")
    assert code(excinfo) == "AccessDenied"
    s3.put_bucket_acl(Bucket="acls", GrantWrite=f'id="{user.canonical_id}"')
    bob.put_object(Bucket="acls", Key="bobs", Body=b"written by bob")
    assert bob.get_object(Bucket="acls", Key="bobs")["Body"].read() == b"written by bob"
    with pytest.raises(ClientError) as excinfo:
        bob.put_bucket_acl(Bucket="acls", ACL="public-read-write")
    assert code(excinfo) == "AccessDenied"
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="acls", Key="x", Body=b"x", ACL="not-a-canned-acl")
    assert code(excinfo) == "InvalidArgument"


def test_bucket_and_object_tagging(s3: Any) -> None:
    s3.create_bucket(Bucket="tags")
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_tagging(Bucket="tags")
    assert code(excinfo) == "NoSuchTagSet"
    s3.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": [{"Key": "team", "Value": "storage"}]})
    assert s3.get_bucket_tagging(Bucket="tags")["TagSet"] == [{"Key": "team", "Value": "storage"}]
    s3.delete_bucket_tagging(Bucket="tags")
    with pytest.raises(ClientError):
        s3.get_bucket_tagging(Bucket="tags")
    s3.put_object(
        Bucket="tags", Key="k", Body=b"x", Tagging="a=1&b=two%20words", Metadata={"m": "v"}
    )
    tagset = s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tagset) == [("a", "1"), ("b", "two words")]
    got = s3.get_object(Bucket="tags", Key="k")
    assert got["TagCount"] == 2 and got["Metadata"] == {"m": "v"}
    s3.put_object_tagging(Bucket="tags", Key="k", Tagging={"TagSet": [{"Key": "c", "Value": "3"}]})
    assert s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"] == [{"Key": "c", "Value": "3"}]
    assert s3.head_object(Bucket="tags", Key="k")["Metadata"] == {"m": "v"}
    s3.delete_object_tagging(Bucket="tags", Key="k")
    assert s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"] == []
    with pytest.raises(ClientError) as excinfo:
        s3.put_object_tagging(
            Bucket="tags",
            Key="k",
            Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]},
        )
    assert code(excinfo) in ("InvalidTag", "BadRequest")


def test_cors_rules_preflight_and_actual_requests(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="cors")
    s3.put_object(Bucket="cors", Key="k", Body=b"x", ACL="public-read")
    url = f"{node.endpoint}/cors/k"
    ask = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    assert anonymous("OPTIONS", url, ask).status == 403  # no rules yet
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_cors(Bucket="cors")
    assert code(excinfo) == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(
        Bucket="cors",
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": ["https://*.example.com"],
                    "AllowedMethods": ["GET", "PUT"],
                    "AllowedHeaders": ["x-amz-*", "content-type"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 600,
                }
            ]
        },
    )
    rules = s3.get_bucket_cors(Bucket="cors")["CORSRules"]
    assert rules[0]["AllowedOrigins"] == ["https://*.example.com"]
    answer = anonymous("OPTIONS", url, {**ask, "Access-Control-Request-Headers": "x-amz-date"})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "GET" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Max-Age"] == "600"
    denied = anonymous("OPTIONS", url, {**ask, "Origin": "https://evil.test"})
    assert denied.status == 403
    denied = anonymous("OPTIONS", url, {**ask, "Access-Control-Request-Method": "DELETE"})
    assert denied.status == 403
    actual = anonymous("GET", url, {"Origin": "https://app.example.com"})
    assert actual.status == 200 and actual.headers["Access-Control-Allow-Origin"] == (
        "https://app.example.com"
    )
    assert actual.headers["Access-Control-Expose-Headers"] == "ETag"
    assert "Access-Control-Allow-Origin" not in anonymous("GET", url).headers
    s3.delete_bucket_cors(Bucket="cors")
    assert anonymous("OPTIONS", url, ask).status == 403
