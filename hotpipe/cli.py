"""The ``hotpipe`` command: api, worker, submit, status, cancel, jobs, and dev tools.

Each subcommand imports its side lazily, so ``hotpipe api`` never imports torch and
``hotpipe submit`` needs neither FastAPI nor Diffusers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotpipe.shared.job import JobRecord
    from hotpipe.shared.settings import Settings


def _start_settings(**overrides: Any) -> Settings | None:
    """The settings a service starts with, or None once it printed why they are refused (exit 2):
    a bad value, or a Sentinel configuration no sentinel answers to (``connections.check_redis``)."""
    from hotpipe.shared.connections import check_redis
    from hotpipe.shared.settings import Settings

    try:
        settings = Settings.from_env(**overrides)
        check_redis(settings)
    except ValueError as exc:  # refused at start, in one line naming the settings; nothing started
        print(f"error: {exc}", file=sys.stderr)
        return None
    return settings


def _api(args: argparse.Namespace) -> int:
    from hotpipe.producer.serve import serve

    overrides = {name: value for name, value in (("api_workers", args.workers), ("api_log_level", args.log_level))
                 if value is not None}
    settings = _start_settings(**overrides)
    if settings is None:
        return 2
    serve(settings, args.host, args.port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from hotpipe.shared.logs import configure_logging, route_library_logs

    overrides = {"device": args.device} if args.device else {}
    if args.preload:
        overrides["preload"] = ",".join(args.preload)
    settings = _start_settings(**overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_format, args.loglevel.upper())
    route_library_logs()
    from hotpipe.workers.worker import NameTaken, run_worker  # torch and diffusers: after logging is set up

    try:
        run_worker(settings, args.family, args.hostname, args.loglevel)
    except NameTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _submit(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_submit import submit

    return submit(args)


def _status(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_client import client_for

    with client_for(args) as client:
        try:
            record = client.get(args.job_id, wait_s=args.wait)
        except KeyboardInterrupt:  # Ctrl-C while waiting: offer to cancel the job
            if sys.stdin.isatty() and input(f"\ncancel {args.job_id}? [y/N] ").strip().lower().startswith("y"):
                record = client.cancel(args.job_id)
            else:
                return 130
    if args.json:
        print(record.model_dump_json(exclude_none=True))
        return 0
    _print_record(record)
    return 0


def _print_record(record: JobRecord) -> None:
    progress = f" {record.progress.step}/{record.progress.total}" if record.progress else ""
    print(f"{record.id} {record.status.value}{progress}  {record.task.value} {record.checkpoint} -> {record.pipeline}")
    if record.stage:
        print(f"  stage        {record.stage.value}")
    for name in ("created_at", "queued_at", "loading_at", "running_at", "uploading_at", "finished_at"):
        if getattr(record, name):
            print(f"  {name:<12} {getattr(record, name).isoformat()}")
    if record.error:
        print(f"  error        {record.error.code}: {record.error.message}")
    for image in record.result.images if record.result else []:
        print(f"  image        {image.width}x{image.height} {image.url}")


def _cancel(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_client import client_for

    with client_for(args) as client:
        record = client.cancel(args.job_id)
    if args.json:
        print(record.model_dump_json(exclude_none=True))
    else:
        _print_record(record)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_jobs import jobs

    return jobs(args)


def _webhooks(args: argparse.Namespace) -> int:
    from hotpipe.producer.api import Services, render
    from hotpipe.producer.webhook_dispatcher import Dispatcher
    from hotpipe.shared.webhook_outbox import Outbox

    settings = _start_settings()
    if settings is None:
        return 2
    svc = Services.from_settings(settings)
    if not svc.settings.webhook_secret:
        raise SystemExit("HOTPIPE_WEBHOOK_SECRET is not set: there is nothing to sign webhooks with")
    Dispatcher(Outbox(svc.redis), svc.settings, lambda r: render(svc, r)).run_forever()
    return 0


def _reaper(args: argparse.Namespace) -> int:
    import signal
    import threading

    from hotpipe.shared.logs import configure_logging
    from hotpipe.shared.reaper import reaper_from_settings, run_reaper

    settings = _start_settings()
    if settings is None:
        return 2
    configure_logging(settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("hotpipe.reaper").info("reaper: a pass every %s s until SIGTERM", settings.reaper_interval_s)
    run_reaper(reaper_from_settings(settings), settings.reaper_interval_s, stop)
    return 0


def _workers(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_client import client_for
    from hotpipe.producer.fleet_cli import print_workers

    with client_for(args) as client:
        workers = client.workers()
    print_workers(workers, as_json=args.json)
    return 0


def _models(args: argparse.Namespace) -> int:
    from hotpipe.producer.cli_client import client_for
    from hotpipe.producer.models_cli import print_models

    with client_for(args) as client:
        models = client.models()
    print_models(models, as_json=args.json)
    return 0


def _make_checkpoints(args: argparse.Namespace) -> int:
    from hotpipe.workers.dev_checkpoints import make_checkpoints

    for path in make_checkpoints(Path(args.dir), args.name or None, force=args.force):
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hotpipe.demo import run_demo

    return run_demo(Path(args.out), Path(args.models), Path(args.workdir), args.redis)


def _stack(args: argparse.Namespace) -> int:
    from hotpipe.demo import serve_stack

    return serve_stack(Path(args.models), Path(args.workdir), args.redis)


def _new_key(args: argparse.Namespace) -> int:
    from hotpipe.producer.auth import hash_key, new_key

    key = new_key()
    print(f"key (give it to the tenant; it is not stored anywhere): {key}")
    print(f"HOTPIPE_API_KEYS entry:      {hash_key(key)}:{args.tenant}")
    print(f"HOTPIPE_API_KEYS_FILE line:  {hash_key(key)} {args.tenant}")
    return 0


#: what ``add_subparsers`` returns; each ``_add_*`` below adds one command to it
Subparsers = argparse._SubParsersAction


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--api`` and ``--api-key``, for the subcommands that call the API."""
    from hotpipe.producer.cli_client import add_client_options

    add_client_options(parser)


def _add_api(sub: Subparsers) -> None:
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--log-level", help="debug, info, warning, error (default: HOTPIPE_API_LOG_LEVEL, info)")
    api.add_argument("--workers", type=int, help="processes serving the port (default: HOTPIPE_API_WORKERS, 1); "
                     "each uses about one core")
    api.set_defaults(fn=_api)


def _add_worker(sub: Subparsers) -> None:
    w = sub.add_parser("worker", help="run a Celery worker for model families")
    w.add_argument("--family", action="append", required=True, help="family key (repeatable)")
    w.add_argument("--device", help="cpu or cuda:N (default: HOTPIPE_DEVICE); one worker per device")
    w.add_argument("--preload", action="append", metavar="CKPT[,CKPT]",
                   help="checkpoints to load before consuming; ready only after (repeatable, or comma-separated)")
    w.add_argument("--hostname", help="Celery node name, %%h = host (default: hotpipe-<pid>@<host>, unique per "
                   "process); a name a live worker already has is refused")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(fn=_worker)


def _add_submit(sub: Subparsers) -> None:
    s = sub.add_parser("submit", help="submit a job through the API")
    _add_client_options(s)
    s.add_argument("--checkpoint", help="required unless every line of --from names one")
    s.add_argument("--revision")
    s.add_argument("--task", default="text2image", choices=["text2image", "image2image", "inpainting"])
    s.add_argument("--prompt", help="required unless every line of --from has one")
    s.add_argument("--negative-prompt")
    for flag, kind in (("--steps", int), ("--guidance", float), ("--strength", float), ("--height", int),
                       ("--width", int), ("--num-images", int), ("--seed", int)):
        s.add_argument(flag, type=kind)
    s.add_argument("--image", type=Path, help="input image file (image2image, inpainting)")
    s.add_argument("--mask", type=Path, help="mask image file (inpainting)")
    s.add_argument("--format", default="png", choices=["png", "webp", "jpeg"])
    s.add_argument("--scheduler", help='a Diffusers scheduler class or a sampler name ("DPM++ 2M Karras", "Euler a")')
    s.add_argument("--scheduler-config", action="append", metavar="KEY=VALUE",
                   help="a scheduler config override (VALUE as JSON: true, 3, 0.5; else a string); repeats")
    s.add_argument("--lora", action="append", metavar="NAME[@WEIGHT_NAME][:SCALE]",
                   help="a LoRA adapter (a folder under the model root or a Hub repo id, with @WEIGHT_NAME for a "
                        ".safetensors file other than pytorch_lora_weights.safetensors), scale 1 unless given; "
                        "repeats")
    s.add_argument("--wait", action="store_true", help="show progress and wait for the result")
    s.add_argument("--out", type=Path, help="download the images here (implies --wait)")
    s.add_argument("--from", dest="from_file", type=Path,
                   help="JSONL file, one request per line; the flags above are its defaults")
    s.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once with --from")
    s.add_argument("--json", action="store_true", help="print final records as JSON lines")
    s.set_defaults(fn=_submit)


def _add_status(sub: Subparsers) -> None:
    st = sub.add_parser("status", help="show a job's record")
    st.add_argument("job_id")
    _add_client_options(st)
    st.add_argument("--wait", type=float, default=0.0, help="wait up to S seconds for a terminal state")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=_status)


def _add_cancel(sub: Subparsers) -> None:
    c = sub.add_parser("cancel", help="cancel a job")
    c.add_argument("job_id")
    _add_client_options(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=_cancel)


def _add_webhooks(sub: Subparsers) -> None:
    wh = sub.add_parser("webhooks", help="deliver webhook events (when the API runs with "
                        "HOTPIPE_WEBHOOK_DISPATCHER=false)")
    wh.set_defaults(fn=_webhooks)


def _add_jobs(sub: Subparsers) -> None:
    j = sub.add_parser("jobs", help="list your jobs, newest first")
    _add_client_options(j)
    j.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    j.add_argument("--limit", type=int, default=20)
    j.add_argument("--cursor", help="next page: the cursor the previous page printed")
    j.add_argument("--json", action="store_true", help="one record per line")
    j.set_defaults(fn=_jobs)


def _add_keys(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    nk = keys.add_parser("new", help="make an API key for a tenant and print the hash to configure")
    nk.add_argument("--tenant", required=True)
    nk.set_defaults(fn=_new_key)


def _add_reaper(sub: Subparsers) -> None:
    rp = sub.add_parser("reaper", help="requeue lost jobs, drain dead workers' queues, re-send lost messages "
                        "(every worker runs one too; this one runs while no worker does)")
    rp.set_defaults(fn=_reaper)


def _add_workers(sub: Subparsers) -> None:
    ws = sub.add_parser("workers", help="list live workers: families, device, hot checkpoints, current job")
    _add_client_options(ws)
    ws.add_argument("--json", action="store_true")
    ws.set_defaults(fn=_workers)


def _add_models(sub: Subparsers) -> None:
    ms = sub.add_parser("models", help="list the catalog: checkpoints (family, tasks) and ControlNets (family)")
    _add_client_options(ms)
    ms.add_argument("--json", action="store_true")
    ms.set_defaults(fn=_models)


def _add_dev(sub: Subparsers) -> None:
    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="dev_command", required=True)
    mk = dev.add_parser("make-checkpoints", help="build tiny random-weight checkpoints offline")
    mk.add_argument("dir")
    mk.add_argument("--name", action="append", help="only this checkpoint (repeatable)")
    mk.add_argument("--force", action="store_true")
    mk.set_defaults(fn=_make_checkpoints)
    for name, fn, text in (("demo", _demo, "start a local stack and run text2image -> image2image -> inpainting"),
                           ("stack", _stack, "start a local stack and keep it running")):
        d = dev.add_parser(name, help=text)
        d.add_argument("--models", default=".hotpipe/models")
        d.add_argument("--workdir", default=".hotpipe/stack")
        d.add_argument("--redis", default="embedded", help="embedded, system, or a redis:// URL")
        if name == "demo":
            d.add_argument("--out", default="demo-output")
        d.set_defaults(fn=fn)


#: the subcommands, in the order ``hotpipe --help`` lists them: each entry adds one
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _add_api, _add_worker, _add_submit, _add_status, _add_cancel, _add_webhooks, _add_jobs, _add_keys,
    _add_reaper, _add_workers, _add_models, _add_dev)


def build_parser() -> argparse.ArgumentParser:
    """The ``hotpipe`` parser: one subcommand per builder in ``COMMANDS``."""
    p = argparse.ArgumentParser(prog="hotpipe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        sys.exit(fn(args))
    except Exception as exc:  # API errors and unreachable servers end in one clear line
        from hotpipe.producer.cli_client import describe
        from hotpipe.producer.client import APIError

        if isinstance(exc, APIError):
            print(f"error: {describe(exc)}", file=sys.stderr)
            sys.exit(2)
        import httpx

        if isinstance(exc, httpx.TransportError):
            print(f"error: cannot reach the API: {exc}", file=sys.stderr)
            sys.exit(3)
        raise
