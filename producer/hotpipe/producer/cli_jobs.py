"""``hotpipe jobs``: your jobs, newest first, as a table (or JSON lines with ``--json``)."""

from __future__ import annotations

import argparse
from datetime import datetime

from rich.console import Console
from rich.table import Table

from hotpipe.producer.cli_client import client_for
from hotpipe.shared.job import JobRecord

COLUMNS = ("id", "status", "stage", "progress", "task", "checkpoint", "created", "queued", "ran", "error")


def _seconds(start: datetime | None, end: datetime | None) -> str:
    return f"{(end - start).total_seconds():.1f}s" if start and end else ""


def row(record: JobRecord) -> tuple[str, ...]:
    """One table row: queue wait (queued -> started) and run time (started -> finished)."""
    progress = f"{record.progress.step}/{record.progress.total}" if record.progress else ""
    return (record.id, record.status.value, record.stage.value if record.stage else "", progress,
            record.task.value, record.checkpoint, record.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _seconds(record.queued_at or record.created_at, record.started_at),
            _seconds(record.started_at, record.finished_at), record.error.code if record.error else "")


def jobs(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        page = client.list(status=args.status, limit=args.limit, cursor=args.cursor)
    if args.json:
        for record in page.jobs:
            print(record.model_dump_json(exclude_none=True))
        return 0
    table = Table(*COLUMNS, box=None, pad_edge=False)
    for record in page.jobs:
        table.add_row(*row(record))
    console = Console(width=200)
    console.print(table if page.jobs else "no jobs")
    if page.next_cursor:
        console.print(f"more: hotpipe jobs --cursor {page.next_cursor}", highlight=False)
    return 0
