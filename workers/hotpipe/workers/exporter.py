"""A worker's ``/metrics``: served by the parent process for itself and its pool child.

Jobs run in the prefork pool child, and the child may be replaced (crash, OOM kill), so the
child can't serve its own metrics.  prometheus_client's multiprocess mode fits: before the
pool forks, the parent makes a fresh directory and switches the metric values to files in
it (``PROMETHEUS_MULTIPROC_DIR``, inherited by the child); the child writes its metrics
there, and the parent answers each scrape by merging the files.  Counters and histograms of
a child that died keep counting; its gauges are dropped (``mark_process_dead``, by the child
on a clean exit, and at each scrape for any child that is gone).

The HTTP server runs on the parent's event loop (the Celery hub), like the reaper: no thread
in a process that forks.  A scrape costs the loop a few milliseconds; a client that connects
and then stalls holds it at most ``REQUEST_TIMEOUT_S``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import bootsteps
from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hotpipe import __version__

log = logging.getLogger(__name__)

#: the variable prometheus_client reads for its multiprocess directory (children inherit it)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_TIMEOUT_S = 2.0
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def enable_multiprocess(path: Path) -> None:
    """Make every metric created from now on in this process (and its forks) write to ``path``.

    prometheus_client picks its value class when it is first imported, from the environment;
    the worker decides at start-up, so it sets both: the variable for the library's readers
    and for the pool child, and the value class for metrics created later in this process.
    """
    os.environ[MULTIPROC_ENV] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def forget_dead_children(path: Path) -> list[int]:
    """Drop the gauges of processes that are gone (their counters stay); returns their pids."""
    dead = []
    for entry in path.iterdir():
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            dead.append(int(match.group(1)))
            multiprocess.mark_process_dead(int(match.group(1)), str(path))
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class ChildrenCollector(Collector):
    """Every process's metrics from the multiprocess directory, live gauges only."""

    def __init__(self, path: Path):
        self.path = path
        self._files = multiprocess.MultiProcessCollector(None, path=str(path))

    def collect(self) -> Iterator[Metric]:
        forget_dead_children(self.path)
        yield from self._files.collect()


class InfoCollector(Collector):
    """``hotpipe_worker_info``: what this worker serves (count workers per family with it)."""

    def __init__(self, families: Sequence[str], device: str):
        self.families, self.device = tuple(families), device

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("hotpipe_worker_info", "A hotpipe worker: 1 per family it consumes.",
                                 labels=["family", "device", "version"])
        for family in self.families:
            info.add_metric([family, self.device, __version__], 1)
        yield info


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        return


class _QuietServer(WSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class MetricsExporter:
    """The multiprocess directory and the listening socket, made before the pool forks."""

    def __init__(self, port: int, families: Sequence[str], device: str, host: str = "0.0.0.0"):
        self.path = Path(tempfile.mkdtemp(prefix="hotpipe-metrics-"))
        enable_multiprocess(self.path)
        self.registry = CollectorRegistry()
        self.registry.register(ChildrenCollector(self.path))
        self.registry.register(InfoCollector(families, device))
        try:
            self.server: WSGIServer = make_server(host, port, make_wsgi_app(self.registry),
                                                  server_class=_QuietServer, handler_class=_QuietHandler)
        except OSError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            raise SystemExit(f"error: can't serve worker metrics on port {port} ({exc.strerror}); set "
                             "HOTPIPE_WORKER_METRICS_PORT to a free port, or to 0 to turn them off") from exc
        self.server.socket.setblocking(False)
        self.port = int(self.server.server_address[1])

    def handle(self) -> None:
        """The listening socket is readable: answer one scrape."""
        try:
            self.server.handle_request()
        except OSError:  # a client that went away or stalled is its own problem
            log.debug("metrics request failed", exc_info=True)

    def child_exiting(self, pid: int | None = None) -> None:
        """A pool child exits cleanly (Celery tells it, in the child): its gauges stop counting at once."""
        multiprocess.mark_process_dead(pid or os.getpid(), str(self.path))

    def close(self) -> None:
        self.server.server_close()
        shutil.rmtree(self.path, ignore_errors=True)

    def step(self) -> type[bootsteps.StartStopStep]:
        """A worker bootstep that serves scrapes on the parent's event loop."""
        exporter = self

        class MetricsStep(bootsteps.StartStopStep):
            requires = ("celery.worker.components:Hub",)

            def start(self, parent: Any) -> None:
                if not parent.use_eventloop:
                    log.warning("worker metrics are not served: this worker runs without an event loop")
                else:
                    log.info("worker metrics on :%d/metrics", exporter.port)

            def register_with_event_loop(self, parent: Any, hub: Any) -> None:
                hub.add_reader(exporter.server.fileno(), exporter.handle)

        return MetricsStep
