"""``hotpipe submit``: one job from flags or many from a JSONL file, with live progress.

Each job is followed over its event stream: a progress bar per job in flight (steps) and
one for the whole batch.  Ctrl-C stops submitting and offers to cancel what is unfinished.
Human output on stderr by default; ``--json`` prints one final record per line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from hotpipe.producer.cli_client import client_for, describe
from hotpipe.producer.client import APIError, Client, data_uri
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import TERMINAL, Status

PARAM_FLAGS = {"negative_prompt": "negative_prompt", "num_inference_steps": "steps", "guidance_scale": "guidance",
               "strength": "strength", "height": "height", "width": "width", "num_images": "num_images",
               "seed": "seed"}


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The request the flags describe (without a prompt when only defaults for --from)."""
    params: dict[str, Any] = {"prompt": args.prompt} if args.prompt else {}
    params.update({k: getattr(args, f) for k, f in PARAM_FLAGS.items() if getattr(args, f) is not None})
    inputs = {k: data_uri(p) for k, p in (("image", args.image), ("mask_image", args.mask)) if p is not None}
    body: dict[str, Any] = {"checkpoint": args.checkpoint, "task": args.task, "params": params,
                            "output_format": args.format}
    if inputs:
        body["inputs"] = inputs
    if args.revision:
        body["revision"] = args.revision
    body.update(controls_from_args(args))
    return body


def controls_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``scheduler`` and ``scheduler_config`` from ``--scheduler`` and ``--scheduler-config KEY=VALUE``."""
    body: dict[str, Any] = {}
    if getattr(args, "scheduler", None):
        body["scheduler"] = args.scheduler
    pairs = getattr(args, "scheduler_config", None) or []
    if pairs:
        body["scheduler_config"] = dict(config_pair(p) for p in pairs)
    if getattr(args, "lora", None):
        body["loras"] = [lora_arg(text) for text in args.lora]
    return body


def lora_arg(text: str) -> dict[str, Any]:
    """``NAME``, ``NAME:SCALE``, ``NAME@WEIGHT_NAME`` or ``NAME@WEIGHT_NAME:SCALE`` (names never hold a colon
    or an at sign: folder names and Hub repo ids; a weight name is a ``.safetensors`` file name)."""
    head, sep, scale = text.rpartition(":")
    if not sep:
        head, scale = text, ""
    name, at, weight_name = head.partition("@")
    lora: dict[str, Any] = {"name": name}
    if at:
        lora["weight_name"] = weight_name
    if not sep:
        return lora
    try:
        return {**lora, "scale": float(scale)}
    except ValueError:
        raise SystemExit(f"--lora {text!r}: write NAME[@WEIGHT_NAME][:SCALE], e.g. my-style:0.8 or "
                         "someone/styles@pixel.safetensors:0.8") from None


def config_pair(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON (``true``, ``3``, ``0.5``) or else taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--scheduler-config {text!r}: write KEY=VALUE, e.g. use_karras_sigmas=true")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def requests_from_file(path: Path, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """One request per JSONL line; a line's fields override the flags (params merged)."""
    bodies = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise SystemExit(f"{path}:{n}: not JSON: {exc}") from exc
        if not isinstance(item, dict):
            raise SystemExit(f"{path}:{n}: expected a JSON object")
        body = {k: v for k, v in defaults.items() if v is not None}
        body.update({k: v for k, v in item.items() if k != "params"})
        body["params"] = {**defaults.get("params", {}), **item.get("params", {})}
        bodies.append({k: v for k, v in body.items() if v is not None})
    return bodies


@dataclass
class Batch:
    """Runs many jobs with at most ``concurrency`` in flight, drawing their progress."""

    client: Client
    out: Path | None
    concurrency: int
    console: Console = field(default_factory=lambda: Console(stderr=True))
    stop: threading.Event = field(default_factory=threading.Event)
    live: dict[str, JobRecord] = field(default_factory=dict)

    def run(self, bodies: list[dict[str, Any]]) -> list[JobRecord | APIError]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        with Progress(*columns, console=self.console, transient=True) as progress:
            overall = progress.add_task("all jobs", total=len(bodies))
            futures = [pool.submit(self._one, body, progress, overall) for body in bodies]
            try:
                return [f.result() for f in futures]
            except KeyboardInterrupt:
                self.stop.set()
                progress.stop()
                self._offer_cancel()
                self.client.close()  # breaks the event streams the threads are reading
                return [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, body: dict[str, Any], progress: Progress, overall: TaskID) -> JobRecord | APIError:
        if self.stop.is_set():
            raise KeyboardInterrupt
        try:
            record = self.client.submit(body)
        except APIError as exc:
            progress.advance(overall)
            return exc
        self.live[record.id] = record
        bar = progress.add_task(f"{record.id[:8]} {record.status.value}", total=None)
        record = self._follow(record, progress, bar)
        progress.remove_task(bar)
        progress.advance(overall)
        self.live.pop(record.id, None)
        if self.out and record.status is Status.SUCCEEDED:
            download_all(self.client, record, self.out)
        return record

    def _follow(self, submitted: JobRecord, progress: Progress, bar: TaskID) -> JobRecord:
        record = submitted
        try:
            for _, record in self.client.events(submitted.id):
                total = record.progress.total if record.progress else None
                step = record.progress.step if record.progress else 0
                progress.update(bar, description=f"{record.id[:8]} {record.status.value}", total=total,
                                completed=step)
                if self.stop.is_set():
                    return record
        except (httpx.TransportError, RuntimeError):
            if self.stop.is_set():  # interrupted: the client was closed under us
                return record
        return record if record.status in TERMINAL else self.client.wait(record.id)

    def _offer_cancel(self) -> None:
        unfinished = list(self.live)
        if not unfinished:
            return
        answer = "n"
        if sys.stdin.isatty():
            answer = input(f"\ncancel {len(unfinished)} unfinished job(s)? [y/N] ").strip().lower()
        if answer.startswith("y"):
            for job_id in unfinished:
                self.client.cancel(job_id)
                self.console.print(f"{job_id} cancel requested")
        else:
            self.console.print("left running: " + " ".join(unfinished))


def download_all(client: Client, record: JobRecord, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(record.result.images if record.result else []):
        path = out / f"{record.id}-{i}.{image.key.rsplit('.', 1)[-1]}"
        path.write_bytes(client.download(image.url or ""))
        paths.append(path)
    return paths


def report(results: list[JobRecord | APIError], as_json: bool, out: Path | None) -> int:
    """Print the outcome of each job; exit status 0 all succeeded, 1 some failed, 2 refused."""
    console = Console(stderr=True)
    for item in results:
        if isinstance(item, APIError):
            console.print(f"refused: {describe(item)}", highlight=False)
            if as_json:
                print(json.dumps({"error": {"code": item.code, "message": item.message, "field": item.field}}))
            continue
        err = f" {item.error.code}: {item.error.message}" if item.error else ""
        console.print(f"{item.id} {item.status.value} {item.pipeline}{err}", highlight=False)
        if as_json:
            print(item.model_dump_json(exclude_none=True))
        elif out and item.result:
            for i, image in enumerate(item.result.images):
                print(out / f"{item.id}-{i}.{image.key.rsplit('.', 1)[-1]}")
    if any(isinstance(r, APIError) for r in results):
        return 2
    return 0 if all(isinstance(r, JobRecord) and r.status is Status.SUCCEEDED for r in results) else 1


def submit(args: argparse.Namespace) -> int:
    defaults = request_from_args(args)
    bodies = requests_from_file(args.from_file, defaults) if args.from_file else [defaults]
    if not bodies:
        raise SystemExit("nothing to submit")
    with client_for(args) as client:
        if not (args.wait or args.out or args.from_file):
            try:
                print(client.submit(bodies[0]).id)
            except APIError as exc:
                return report([exc], args.json, None)
            return 0
        results = Batch(client, args.out, max(1, args.concurrency)).run(bodies)
    return report(results, args.json, args.out)
