"""Log lines for the API and the workers: text or JSON, each carrying the job id it is about.

The job id travels in a context variable: ``job_context(job_id)`` sets it around a job's
run in the worker, the API sets it for requests on one job, and a filter copies it onto
every record logged meanwhile.  ``HOTPIPE_LOG_FORMAT=json`` writes one JSON object per
line (``ts``, ``level``, ``logger``, ``message``, ``job_id``, ``exc_info``) for log
shippers; ``text`` is for people.  Passwords in URLs (``redis://:secret@host``) are masked
in both, whatever logged them.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

#: the job the current code is working on (None outside any job)
JOB_ID: ContextVar[str | None] = ContextVar("hotpipe_job_id", default=None)

#: ``scheme://user:password@`` -> the password is never written out
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(job_suffix)s"
#: attributes every LogRecord has; anything else was passed with ``extra=`` and is kept in JSON
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "job_id", "job_suffix", "color_message"}
#: libraries that log through a handler of their own; the worker sends their lines to ours
LIBRARIES = ("transformers", "diffusers")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log lines written inside carry ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


class JobIdFilter(logging.Filter):
    """Puts the current job id (or None) on each record as ``job_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        record.job_id = job_id
        record.job_suffix = f" [job {job_id}]" if job_id else ""
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [job id]``, passwords masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line; fields given with ``extra=`` are kept, passwords masked."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id:
            doc["job_id"] = job_id
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc_info"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        return redact(json.dumps(doc, default=str))


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def configure_logging(log_format: str, level: int | str = logging.INFO) -> logging.Handler:
    """One handler on the root logger, writing ``log_format`` lines to stderr; returns it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a log line in the same format
    return handler


def route_library_logs() -> None:
    """Send transformers' and diffusers' log lines through the root handler (call before importing
    them for real: some of their lines are written at import), and turn off their loading progress
    bars (carriage-return noise in a log)."""
    for name in LIBRARIES:
        try:
            library = importlib.import_module(f"{name}.utils.logging")
        except ImportError:
            continue
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()
