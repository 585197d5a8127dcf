"""Conditional headers read HTTP dates the same way whatever the host's time zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from objfs.s3 import conditions


@pytest.fixture
def far_zone() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 -0000",  # no offset said: UTC, not the host's zone
        "Sun, 06 Nov 1994 17:49:37 +0900",
    ],
)
def test_an_http_date_is_the_same_instant_on_any_host(far_zone: None, value: str) -> None:
    assert conditions._http_seconds(value) == 784111777


def test_a_malformed_date_is_ignored() -> None:
    assert conditions._http_seconds("yesterday") is None
