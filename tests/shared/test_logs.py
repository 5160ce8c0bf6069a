"""Log lines: JSON or text, the job id of the job being worked on, passwords never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hotpipe.shared import logs
from hotpipe.shared.logs import JOB_ID, JobIdFilter, JsonFormatter, TextFormatter, job_context, redact

JOB = "0123456789abcdef0123456789abcdef"


Lines = tuple[logging.Logger, io.StringIO, logging.Handler]


@pytest.fixture
def lines() -> Iterator[Lines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobIdFilter())
    logger = logging.getLogger("hotpipe.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_lines_carry_the_job_id_inside_a_job_only(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(JsonFormatter())
    logger.info("before")
    with job_context(JOB):
        logger.warning("during %s", "the run", extra={"attempt": 2})
    logger.info("after")
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["message"] for d in docs] == ["before", "during the run", "after"]
    assert [d.get("job_id") for d in docs] == [None, JOB, None]
    assert docs[1]["level"] == "WARNING" and docs[1]["logger"] == "hotpipe.test.logs" and docs[1]["attempt"] == 2
    assert docs[0]["ts"].endswith("+00:00")
    assert JOB_ID.get() is None


def test_json_lines_hold_the_traceback(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(JsonFormatter())
    try:
        raise ValueError("no pipeline")
    except ValueError:
        logger.exception("job failed")
    (doc,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "ValueError: no pipeline" in doc["exc_info"] and doc["message"] == "job failed"


def test_text_lines_name_the_job(lines: Lines) -> None:
    logger, stream, handler = lines
    handler.setFormatter(TextFormatter())
    with job_context(JOB):
        logger.info("loaded")
    logger.info("idle")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(f"INFO hotpipe.test.logs: loaded [job {JOB}]")
    assert second.endswith("INFO hotpipe.test.logs: idle")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_passwords_in_urls_are_masked(lines: Lines,
                                      formatter: logging.Formatter) -> None:
    logger, stream, handler = lines
    handler.setFormatter(formatter)
    logger.warning("cannot reach %s", "redis://default:s3cr3t@redis:6379/0")
    try:
        raise ConnectionError("rediss://:hunter2@cache.internal:6380")
    except ConnectionError:
        logger.exception("down")
    out = stream.getvalue()
    assert "s3cr3t" not in out and "hunter2" not in out
    assert "redis://default:***@redis:6379/0" in out and "rediss://:***@cache.internal:6380" in out


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
    ("redis://user:pw@h", "redis://user:***@h"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("http://127.0.0.1:9000/bucket/a@b.png", "http://127.0.0.1:9000/bucket/a@b.png"),
    ("no url here", "no url here"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_configure_logging_puts_one_handler_on_the_root() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        handler = logs.configure_logging("json", "WARNING")
        assert root.handlers == [handler] and root.level == logging.WARNING
        assert isinstance(handler.formatter, JsonFormatter)
        assert isinstance(logs.configure_logging("text").formatter, TextFormatter)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
