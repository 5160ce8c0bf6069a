"""Delivers webhook events from the Redis outbox: signed POSTs, retried with backoff.

Runs as a thread in every API process (``HOTPIPE_WEBHOOK_DISPATCHER``; or on its own:
``hotpipe webhooks``), never in a worker, so a slow or dead receiver can never hold up
generation.  Deliveries go out on a
small pool, so one slow receiver holds up one slot, not the others.  ``start`` and
``completed`` events are tried up to ``webhook_max_tries`` times, waiting
``webhook_backoff_s`` × 2ⁿ (at most 300 s) between tries; ``progress`` events once.
Every try of an event carries the same event id and a fresh timestamp and signature.
Each connection goes to an address checked when it was opened (``egress.pinned_client``):
a receiver's name that resolves inward by delivery time (DNS rebinding) is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import httpx
import redis

from hotpipe.shared.egress import pinned_client
from hotpipe.shared.job import JobRecord
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import record_from_fields
from hotpipe.shared.webhook_outbox import Outbox, WebhookEvent
from hotpipe.shared.webhooks import signed_headers, webhook_address

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
#: events taken per pass, and how often an idle dispatcher looks for due ones
BATCH = 16
IDLE_POLL_S = 0.2
#: events retried (the others are tried once)
RETRIED = frozenset({"start", "completed"})


def backoff_s(base_s: float, tries: int) -> float:
    """The pause after ``tries`` failed tries."""
    return float(min(base_s * 2 ** (tries - 1), MAX_BACKOFF_S))


@dataclass
class Dispatcher:
    """Claims due events and delivers them; ``render`` turns a record into the body's JSON."""

    outbox: Outbox
    settings: Settings
    render: Callable[[JobRecord], str]
    http: httpx.Client = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "webhook"), init=False)

    def __post_init__(self) -> None:
        self.http = pinned_client("webhook_url", allow_private=self.settings.webhook_allow_private,
                                  timeout_s=self.settings.webhook_timeout_s)

    def run_once(self) -> int:
        """Deliver what is due now; returns how many events were tried."""
        lease_s = 2 * self.settings.webhook_timeout_s + 5
        events = self.outbox.claim(BATCH, lease_s)
        wait([self._pool.submit(self.deliver, event) for event in events])
        return len(events)

    def deliver(self, event: WebhookEvent) -> bool:
        """One try of ``event``; True when the receiver took it (2xx)."""
        secret = self.settings.webhook_secret or ""
        try:
            webhook_address(event.url)  # the addresses are checked as the connection is opened
            body = self.render(record_from_fields(event.record)).encode()
            response = self.http.post(event.url, content=body, timeout=self.settings.webhook_timeout_s,
                                      headers=signed_headers(secret, event.event, event.id, body))
            ok, why = response.is_success, f"HTTP {response.status_code}"
        except Exception as exc:  # a receiver's failure must never reach the loop
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.outbox.drop(event.id)
            return True
        tries = event.tries + 1
        if event.event not in RETRIED or tries >= self.settings.webhook_max_tries:
            log.warning("webhook %s (%s of job %s) dropped after %d tries: %s", event.id, event.event,
                        event.job_id, tries, why)
            self.outbox.drop(event.id)
        else:
            delay = backoff_s(self.settings.webhook_backoff_s, tries)
            log.info("webhook %s (%s) failed (%s); try %d in %.1fs", event.id, event.event, why, tries + 1, delay)
            self.outbox.retry(event, delay)
        return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def run_forever(self) -> None:
        """Deliver until interrupted (``hotpipe webhooks``: a dispatcher outside the API)."""
        try:
            self._loop()
        finally:
            self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except redis.RedisError as exc:
                log.warning("webhook dispatcher: Redis unavailable (%s)", exc)
                busy = 0
            if not busy:
                self._stop.wait(IDLE_POLL_S)
