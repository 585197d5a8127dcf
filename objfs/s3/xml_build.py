"""objfs.s3.xml_build — the ElementTree building blocks of S3 response bodies.

How xml_render and xml_listing put a document together: a root in the S3
namespace, child elements whose text is cleaned to what XML can carry (booleans
as true/false, integers in decimal), the <Owner>-shaped and checksum elements
several documents share, and the bytes with the XML declaration AWS sends.
Nothing here knows a particular document.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from objfs.s3.xml_values import S3_NAMESPACE, Checksums, Owner, checksum_pairs, clean

_PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def s3_root(tag: str) -> ET.Element:
    """The root element of a response document, in the S3 namespace."""
    return ET.Element(tag, xmlns=S3_NAMESPACE)


def add(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    """A new child <tag> of `parent`, holding `text` (none when None)."""
    child = ET.SubElement(parent, tag)
    if isinstance(text, bool):
        child.text = "true" if text else "false"
    elif isinstance(text, int):
        child.text = str(text)
    elif text is not None:
        child.text = clean(text)
    return child


def to_bytes(root: ET.Element) -> bytes:
    """The document as UTF-8, after the XML declaration."""
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return _PROLOG + body


def add_owner(parent: ET.Element, tag: str, owner: Owner) -> None:
    """An <Owner>-shaped child <tag>: <ID>, and <DisplayName> when known."""
    element = add(parent, tag)
    add(element, "ID", owner.id)
    if owner.display_name is not None:
        add(element, "DisplayName", owner.display_name)


def add_checksums(parent: ET.Element, checksums: Checksums | None, kind: str | None) -> None:
    """<ChecksumCRC32>... in AWS order, then <ChecksumType> when `kind` is given."""
    for name, value in checksum_pairs(checksums):
        add(parent, "Checksum" + name, value)
    if kind is not None:
        add(parent, "ChecksumType", kind)
