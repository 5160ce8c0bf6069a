"""The Celery app both sides share: one queue per family, JSON only, at-least-once.

The message carries only the job id; the job record in Redis is the truth.  Delivery
is at-least-once (late acks, requeue on a lost worker), so the task must be idempotent:
it claims the record with a compare-and-set and writes deterministic object keys.
"""

from __future__ import annotations

from celery import Celery
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError

from hotpipe.shared.connections import broker_transport_options, broker_url
from hotpipe.shared.queues import PRIORITIES
from hotpipe.shared.settings import Settings

TASK_NAME = "hotpipe.run_job"

#: API priorities run 0 (least urgent) .. 9 (most urgent) (``queues.PRIORITIES``); 5 when not given
DEFAULT_PRIORITY = 5


def make_celery(settings: Settings) -> Celery:
    app = Celery("hotpipe", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        # Ten priority lists per queue ("{queue}", "{queue}\x06\x161" .. "\x06\x169"), read in order
        # by one BRPOP: Kombu's 0 is the most urgent, so API priority p goes to list 9 - p.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "priority_steps": list(PRIORITIES), "queue_order_strategy": "priority",
                                  **broker_transport_options(settings)},
        # A lost broker connection (a Redis failover) is re-established for ever, never the end of the worker.
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        # Pipelines load lazily in the child, but importing torch/diffusers can be slow.
        worker_proc_alive_timeout=120.0,
        # Task events and heartbeats are what Flower and `celery events` show (HOTPIPE_WORKER_EVENTS).
        worker_send_task_events=settings.worker_events,
        task_send_sent_event=False,
    )
    return app


def node_name(hostname: str | None, pid: int) -> str:
    """Celery's node name for ``--hostname`` (``%h`` expanded, ``@host`` added if missing).

    The default (``None``) is ``hotpipe-{pid}@{host}``: unique per worker process, so two workers
    on one host (one per GPU) are two workers in the registry, in Celery and in Flower.
    """
    return host_format(default_nodename(hostname or f"hotpipe-{pid}@%h"))


def node_is_live(app: Celery, name: str, timeout_s: float = 1.0) -> bool:
    """Whether a worker named ``name`` answers a ping now (a crashed one doesn't, so its name is free).

    An unreachable broker answers False: the worker then starts and waits for Redis as usual.
    The replies are read on a connection of its own, closed here: from Kombu's connection pool
    (one per broker URL, shared by every app in the process, the worker's too), one left with
    its reply BRPOP pending would be closed again in each forked pool child, which would then
    wait for that reply on the parent's socket for ever.  The pool itself is left open: the
    worker's control replies are published through it.
    """
    try:
        with app.connection_for_write() as connection:
            return bool(app.control.ping(destination=[name], timeout=timeout_s, connection=connection))
    except (OperationalError, OSError):
        return False
