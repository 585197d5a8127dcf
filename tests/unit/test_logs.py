"""Log lines: one per event, text or JSON, carrying the S3 request id when there is one."""

from __future__ import annotations

import json
import logging

import pytest

from objfs import logs


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_request_id_and_the_traceback(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("info", "json")
    log = logging.getLogger("objfs.test")
    token = logs.request_id.set("ABC123")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed: %s", "why")
    finally:
        logs.request_id.reset(token)
    log.debug("hidden at info")
    log.warning("after the request")
    lines = capsys.readouterr().err.strip().split("\n")
    assert len(lines) == 2, lines  # the traceback stays inside its event
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "error" and first["logger"] == "objfs.test"
    assert first["message"] == "it failed: why"
    assert first["request_id"] == "ABC123"
    assert "ValueError: boom" in first["traceback"]
    assert first["time"].endswith("Z")
    assert "request_id" not in second and second["level"] == "warning"


def test_text_lines_end_with_the_request_id(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("debug", "text")
    token = logs.request_id.set("F00D")
    try:
        logging.getLogger("objfs.s3").info("slow PUT")
    finally:
        logs.request_id.reset(token)
    logging.getLogger("objfs.s3").debug("plain")
    assert capsys.readouterr().err.split("\n")[:2] == [
        "INFO objfs.s3: slow PUT [F00D]",
        "DEBUG objfs.s3: plain",
    ]


def test_a_text_event_with_a_traceback_is_one_line(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("info", "text")
    token = logs.request_id.set("BEEF")
    try:
        try:
            raise KeyError("lost")
        except KeyError:
            logging.getLogger("objfs.fuse").exception("two\nlines")
    finally:
        logs.request_id.reset(token)
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert len(lines) == 1, lines
    assert lines[0].startswith("ERROR objfs.fuse: two\\nlines [BEEF]\\nTraceback")
    assert lines[0].endswith("KeyError: 'lost'")
