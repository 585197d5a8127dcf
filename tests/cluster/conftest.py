"""The `cluster` fixture: a Cluster (cluster_nodes.py), every node killed and its
directory removed at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_nodes import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        made.close()
