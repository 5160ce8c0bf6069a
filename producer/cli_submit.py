"""``hotpipe submit``: build a request from flags, submit it, show progress, download."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx

from hotpipe.producer.client import APIError, Client, data_uri
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import TERMINAL, Status

PARAM_FLAGS = {"negative_prompt": "negative_prompt", "num_inference_steps": "steps", "guidance_scale": "guidance",
               "strength": "strength", "height": "height", "width": "width", "num_images": "num_images",
               "seed": "seed"}


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"prompt": args.prompt}
    params.update({k: getattr(args, f) for k, f in PARAM_FLAGS.items() if getattr(args, f) is not None})
    inputs = {k: data_uri(p) for k, p in (("image", args.image), ("mask_image", args.mask)) if p is not None}
    body: dict[str, Any] = {"checkpoint": args.checkpoint, "task": args.task, "params": params,
                            "output_format": args.format}
    if inputs:
        body["inputs"] = inputs
    if args.revision:
        body["revision"] = args.revision
    return body


def draw(record: JobRecord) -> None:
    step, total = (record.progress.step, record.progress.total) if record.progress else (0, 0)
    filled = int(30 * step / total) if total else 0
    sys.stderr.write(f"\r{record.id[:8]} {record.status.value:<9} [{'#' * filled:<30}] {step}/{total or '?'}")
    sys.stderr.flush()


def show_progress(client: Client, job_id: str) -> JobRecord:
    """Follow the job's event stream, drawing a one-line progress bar, until it is terminal."""
    record: JobRecord | None = None
    try:
        for _, record in client.events(job_id):
            draw(record)
    except httpx.TransportError:
        pass  # the stream broke: wait() falls back to long-polling
    if record is None or record.status not in TERMINAL:
        record = client.wait(job_id)
    sys.stderr.write(f"\r{job_id[:8]} {record.status.value:<9}{' ' * 40}\n")
    return record


def download_all(client: Client, record: JobRecord, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(record.result.images if record.result else []):
        path = out / f"{record.id}-{i}.{image.key.rsplit('.', 1)[-1]}"
        path.write_bytes(client.download(image.url or ""))
        paths.append(path)
    return paths


def submit(args: argparse.Namespace) -> int:
    with Client(args.api) as client:
        try:
            record = client.submit(request_from_args(args))
        except APIError as exc:
            print(f"error: {exc.message} ({exc.code}{', field ' + exc.field if exc.field else ''})", file=sys.stderr)
            return 2
        print(record.id)
        if not (args.wait or args.out):
            return 0
        record = show_progress(client, record.id)
        if record.status is not Status.SUCCEEDED:
            err = record.error
            print(f"job {record.status.value}: {err.code + ': ' + err.message if err else ''}", file=sys.stderr)
            return 1
        for path in download_all(client, record, args.out) if args.out else []:
            print(path)
    return 0
