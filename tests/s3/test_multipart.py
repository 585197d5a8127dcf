"""Multipart uploads through boto3: the transfer manager, the low-level calls, and
their errors.

Method: a real node (s3_node.py); objects are compared byte for byte; the
internal uploads bucket is looked at through the store to show that Complete and
Abort leave nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3_node import Node

from objfs.s3.checksums import Checksum
from objfs.s3.multipart import UPLOADS_BUCKET

MiB = 1024 * 1024


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def leftover_uploads(node: Node) -> list[str]:
    page = node.call(lambda: node.store.list_objects(UPLOADS_BUCKET, limit=1000))
    return [o.key for o in page.objects]


def test_transfer_manager_uploads_and_downloads_in_parts(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="transfers")
    data = os.urandom(40 * MiB + 123)
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(data), "transfers", "big", Config=config)
    head = s3.head_object(Bucket="transfers", Key="big")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-6")
    sink = io.BytesIO()
    s3.download_fileobj("transfers", "big", sink, Config=config)
    assert sink.getvalue() == data
    assert leftover_uploads(node) == []
    assert "transfers" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert UPLOADS_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_low_level_calls_etag_list_parts_and_list_uploads(s3: Any) -> None:
    s3.create_bucket(Bucket="lowlevel")
    upload = s3.create_multipart_upload(Bucket="lowlevel", Key="k", Metadata={"m": "v"})
    upload_id = upload["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    etags = []
    for number, part in enumerate(parts, 1):
        etags.append(
            s3.upload_part(
                Bucket="lowlevel", Key="k", UploadId=upload_id, PartNumber=number, Body=part
            )["ETag"]
        )
    listed = s3.list_parts(Bucket="lowlevel", Key="k", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in listed["Parts"]] == [len(p) for p in parts]
    uploads = s3.list_multipart_uploads(Bucket="lowlevel")
    assert [(u["Key"], u["UploadId"]) for u in uploads["Uploads"]] == [("k", upload_id)]
    done = s3.complete_multipart_upload(
        Bucket="lowlevel",
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert done["ETag"] == f'"{expected}-3"'
    got = s3.get_object(Bucket="lowlevel", Key="k")
    assert got["Body"].read() == b"".join(parts)
    assert got["Metadata"] == {"m": "v"}
    assert s3.list_multipart_uploads(Bucket="lowlevel").get("Uploads", []) == []
    with pytest.raises(ClientError) as excinfo:
        s3.list_parts(Bucket="lowlevel", Key="k", UploadId=upload_id)
    assert error_code(excinfo) == "NoSuchUpload"


def test_complete_refuses_small_parts_wrong_etags_and_bad_order(s3: Any) -> None:
    s3.create_bucket(Bucket="mperrors")
    upload_id = s3.create_multipart_upload(Bucket="mperrors", Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket="mperrors", Key="k", UploadId=upload_id, PartNumber=1, Body=b"a")[
        "ETag"
    ]
    e2 = s3.upload_part(Bucket="mperrors", Key="k", UploadId=upload_id, PartNumber=2, Body=b"b")[
        "ETag"
    ]

    def complete(parts: list[dict[str, Any]]) -> str:
        with pytest.raises(ClientError) as excinfo:
            s3.complete_multipart_upload(
                Bucket="mperrors", Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return error_code(excinfo)

    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]) == (
        "EntityTooSmall"
    )
    assert complete([{"PartNumber": 1, "ETag": '"00"'}]) == "InvalidPart"
    assert complete([{"PartNumber": 3, "ETag": e1}]) == "InvalidPart"
    assert complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]) == (
        "InvalidPartOrder"
    )
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket="mperrors", Key="k", UploadId=upload_id, PartNumber=0, Body=b"x")
    assert error_code(excinfo) == "InvalidArgument"
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket="mperrors", Key="other", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert error_code(excinfo) == "NoSuchUpload"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="mperrors", Key="k")
    s3.abort_multipart_upload(Bucket="mperrors", Key="k", UploadId=upload_id)


def test_abort_frees_the_parts_space(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="aborts")
    upload_id = s3.create_multipart_upload(Bucket="aborts", Key="k")["UploadId"]
    free_before = node.call(lambda: node.store.space.free_bytes)
    for number in (1, 2):
        s3.upload_part(
            Bucket="aborts",
            Key="k",
            UploadId=upload_id,
            PartNumber=number,
            Body=os.urandom(6 * MiB),
        )
    assert node.call(lambda: node.store.space.free_bytes) < free_before - 12 * MiB
    s3.abort_multipart_upload(Bucket="aborts", Key="k", UploadId=upload_id)
    assert node.call(lambda: node.store.space.free_bytes) == free_before
    assert [k for k in leftover_uploads(node) if k.startswith("aborts/")] == []


def test_upload_part_copy_with_ranges_composes_by_reference(s3: Any) -> None:
    s3.create_bucket(Bucket="partcopy")
    source = os.urandom(12 * MiB)
    s3.put_object(Bucket="partcopy", Key="src", Body=source)
    upload_id = s3.create_multipart_upload(Bucket="partcopy", Key="dst")["UploadId"]
    first = s3.upload_part_copy(
        Bucket="partcopy",
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": "partcopy", "Key": "src"},
        CopySourceRange=f"bytes=0-{6 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    second = s3.upload_part_copy(
        Bucket="partcopy",
        Key="dst",
        UploadId=upload_id,
        PartNumber=2,
        CopySource={"Bucket": "partcopy", "Key": "src"},
        CopySourceRange=f"bytes={8 * MiB}-{12 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    assert first.strip('"') == hashlib.md5(source[: 6 * MiB]).hexdigest()
    s3.complete_multipart_upload(
        Bucket="partcopy",
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        },
    )
    got = s3.get_object(Bucket="partcopy", Key="dst")["Body"].read()
    assert got == source[: 6 * MiB] + source[8 * MiB :]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket="partcopy",
            Key="dst2",
            UploadId=s3.create_multipart_upload(Bucket="partcopy", Key="dst2")["UploadId"],
            PartNumber=1,
            CopySource="partcopy/src",
            CopySourceRange=f"bytes=0-{13 * MiB}",
        )
    assert error_code(excinfo) == "InvalidRange"


def test_get_by_part_number_and_object_attributes(s3: Any) -> None:
    s3.create_bucket(Bucket="partnumbers")
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 7), os.urandom(1000)]
    upload_id = s3.create_multipart_upload(Bucket="partnumbers", Key="k")["UploadId"]
    etags = [
        s3.upload_part(Bucket="partnumbers", Key="k", UploadId=upload_id, PartNumber=n, Body=part)[
            "ETag"
        ]
        for n, part in enumerate(parts, 1)
    ]
    s3.complete_multipart_upload(
        Bucket="partnumbers",
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    for number, part in enumerate(parts, 1):
        got = s3.get_object(Bucket="partnumbers", Key="k", PartNumber=number)
        assert got["Body"].read() == part
        assert got["PartsCount"] == 3
        head = s3.head_object(Bucket="partnumbers", Key="k", PartNumber=number)
        assert head["ContentLength"] == len(part)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="partnumbers", Key="k", PartNumber=4)
    assert error_code(excinfo) == "InvalidPartNumber"
    attributes = s3.get_object_attributes(
        Bucket="partnumbers",
        Key="k",
        ObjectAttributes=["ETag", "ObjectSize", "ObjectParts", "StorageClass"],
    )
    assert attributes["ObjectSize"] == sum(len(p) for p in parts)
    assert attributes["ETag"].endswith("-3")
    assert attributes["ObjectParts"]["TotalPartsCount"] == 3
    assert [p["Size"] for p in attributes["ObjectParts"]["Parts"]] == [len(p) for p in parts]
    assert attributes["StorageClass"] == "STANDARD"


# -- checksums of multipart objects ---------------------------------------------------


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def crc(algorithm: str, data: bytes) -> bytes:
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.digest()


def upload_in_parts(s3: Any, bucket: str, key: str, parts: list[bytes], **create: Any) -> Any:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)
    algorithm = create.get("ChecksumAlgorithm")
    done = []
    for number, part in enumerate(parts, 1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        answer = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            **extra,
        )
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm}"] = answer[f"Checksum{algorithm}"]
        done.append(entry)
    return upload, s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


def test_an_upload_with_a_checksum_algorithm_gives_its_object_a_composite_checksum(
    s3: Any,
) -> None:
    s3.create_bucket(Bucket="composite")
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 7), os.urandom(1000)]
    upload, done = upload_in_parts(s3, "composite", "k", parts, ChecksumAlgorithm="CRC32C")
    assert upload["ChecksumAlgorithm"] == "CRC32C"
    assert upload["ChecksumType"] == "COMPOSITE"
    # S3's composite: the CRC32C of the parts' CRC32Cs end to end, then "-N".
    expected = b64(crc("crc32c", b"".join(crc("crc32c", p) for p in parts))) + "-3"
    assert done["ChecksumCRC32C"] == expected
    assert done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket="composite", Key="k", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32C"], head["ChecksumType"]) == (expected, "COMPOSITE")
    got = s3.get_object(Bucket="composite", Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)
    second = s3.get_object(Bucket="composite", Key="k", PartNumber=2, ChecksumMode="ENABLED")
    assert second["Body"].read() == parts[1]
    assert second["ChecksumCRC32C"] == b64(crc("crc32c", parts[1]))
    attributes = s3.get_object_attributes(
        Bucket="composite", Key="k", ObjectAttributes=["Checksum", "ObjectParts"]
    )
    assert attributes["Checksum"] == {"ChecksumCRC32C": expected, "ChecksumType": "COMPOSITE"}
    assert [p["ChecksumCRC32C"] for p in attributes["ObjectParts"]["Parts"]] == [
        b64(crc("crc32c", p)) for p in parts
    ]


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32"])
def test_a_full_object_checksum_is_the_crc_of_the_whole_object(s3: Any, algorithm: str) -> None:
    bucket = f"full-{algorithm.lower()}"
    s3.create_bucket(Bucket=bucket)
    parts = [os.urandom(5 * MiB + 3), os.urandom(4321)]
    create = {"ChecksumAlgorithm": algorithm}
    if algorithm == "CRC32":
        create["ChecksumType"] = "FULL_OBJECT"
    _, done = upload_in_parts(s3, bucket, "k", parts, **create)
    whole = b64(crc(algorithm.lower(), b"".join(parts)))
    assert (done[f"Checksum{algorithm}"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)  # boto3 checks a full-object CRC as it reads
    assert (got[f"Checksum{algorithm}"], got["ChecksumType"]) == (whole, "FULL_OBJECT")


def test_upload_part_copy_and_transfer_manager_parts_carry_the_uploads_checksum(
    s3: Any,
) -> None:
    s3.create_bucket(Bucket="copied-parts")
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket="copied-parts", Key="source", Body=source)
    upload = s3.create_multipart_upload(Bucket="copied-parts", Key="k", ChecksumAlgorithm="SHA256")
    copied = s3.upload_part_copy(
        Bucket="copied-parts",
        Key="k",
        UploadId=upload["UploadId"],
        PartNumber=1,
        CopySource={"Bucket": "copied-parts", "Key": "source"},
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )["CopyPartResult"]
    first = hashlib.sha256(source[: 5 * MiB]).digest()
    assert copied["ChecksumSHA256"] == b64(first)
    tail = os.urandom(10)
    second = s3.upload_part(
        Bucket="copied-parts",
        Key="k",
        UploadId=upload["UploadId"],
        PartNumber=2,
        Body=tail,
        ChecksumAlgorithm="SHA256",
    )
    listed = s3.list_parts(Bucket="copied-parts", Key="k", UploadId=upload["UploadId"])
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("SHA256", "COMPOSITE")
    assert [p["ChecksumSHA256"] for p in listed["Parts"]] == [
        b64(first),
        b64(hashlib.sha256(tail).digest()),
    ]
    done = s3.complete_multipart_upload(
        Bucket="copied-parts",
        Key="k",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": copied["ETag"]},
                {"PartNumber": 2, "ETag": second["ETag"]},
            ]
        },
    )
    composite = hashlib.sha256(first + hashlib.sha256(tail).digest()).digest()
    assert done["ChecksumSHA256"] == b64(composite) + "-2"
    # The transfer manager asks for CRC32 (boto3's default): its objects get one.
    data = os.urandom(17 * MiB)
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(data), "copied-parts", "managed", Config=config)
    head = s3.head_object(Bucket="copied-parts", Key="managed", ChecksumMode="ENABLED")
    chunks = [data[i : i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    assert (
        head["ChecksumCRC32"] == b64(crc("crc32", b"".join(crc("crc32", c) for c in chunks))) + "-3"
    )


def test_multipart_checksum_errors(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="checksum-errors")
    for create in (
        {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "COMPOSITE"},
        {"ChecksumAlgorithm": "SHA1", "ChecksumType": "FULL_OBJECT"},
    ):
        with pytest.raises(ClientError) as excinfo:
            s3.create_multipart_upload(Bucket="checksum-errors", Key="k", **create)
        assert error_code(excinfo) == "InvalidRequest"
    upload = s3.create_multipart_upload(
        Bucket="checksum-errors", Key="k", ChecksumAlgorithm="CRC32C"
    )
    with pytest.raises(ClientError) as excinfo:  # a part with another algorithm
        s3.upload_part(
            Bucket="checksum-errors",
            Key="k",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x",
            ChecksumAlgorithm="CRC32",
        )
    assert error_code(excinfo) == "InvalidRequest"
    plain = node.client(request_checksum_calculation="when_required")  # sends no CRC32
    part = plain.upload_part(  # no checksum sent: the node computes the upload's own
        Bucket="checksum-errors", Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )
    assert part["ChecksumCRC32C"] == b64(crc("crc32c", b"x"))
    with pytest.raises(ClientError) as excinfo:  # Complete names a checksum the part lacks
        s3.complete_multipart_upload(
            Bucket="checksum-errors",
            Key="k",
            UploadId=upload["UploadId"],
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC32C": "AAAAAA=="}]
            },
        )
    assert error_code(excinfo) == "InvalidPart"
    done = s3.complete_multipart_upload(
        Bucket="checksum-errors",
        Key="k",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert done["ChecksumCRC32C"] == b64(crc("crc32c", crc("crc32c", b"x"))) + "-1"
