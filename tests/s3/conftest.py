"""Fixtures for S3 tests: one real node per module (see s3_node.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from s3_node import WORK_DIR, Node, start_node, stop_node


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    running = start_node(os.path.join(path, "data"))
    try:
        yield running
    finally:
        stop_node(running)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def s3(node: Node) -> Any:
    return node.client()
