"""The webhook outbox in Redis: events waiting for delivery, claimed with a lease, retried.

The store's Lua adds an event in the same script as the state change it reports
(``webhook`` in ``lua/prelude.lua``), so an event exists exactly when its change happened.  Dispatchers claim
due events by pushing their due time out by a lease (an event whose dispatcher died comes
due again), and then either drop the event (delivered, or out of tries) or schedule the
next try.  Any number of dispatchers may run: claiming is one script, so each due event
goes to one of them at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from hotpipe.shared import keys, scripts


@dataclass
class WebhookEvent:
    """One event owed to a webhook: the record as it stood when the event happened."""

    id: str
    job_id: str
    event: str
    url: str
    tries: int
    record: dict[str, str]

    @classmethod
    def from_json(cls, raw: str) -> WebhookEvent:
        doc: dict[str, Any] = json.loads(raw)
        flat = doc["record"]
        return cls(doc["id"], doc["job_id"], doc["event"], doc["url"], int(doc["tries"]),
                   dict(zip(flat[::2], flat[1::2], strict=True)))

    def to_json(self) -> str:
        flat = [x for pair in self.record.items() for x in pair]
        return json.dumps({"id": self.id, "job_id": self.job_id, "event": self.event, "url": self.url,
                           "tries": self.tries, "record": flat})


class Outbox:
    """Claims, retries and drops webhook events."""

    def __init__(self, client: redis.Redis):
        self.redis = client
        self._claim = scripts.register(client, "webhook_claim")
        self._retry = scripts.register(client, "webhook_retry")

    def claim(self, limit: int, lease_s: float) -> list[WebhookEvent]:
        raw = self._claim(keys=[keys.webhook_due(), keys.webhook_events()], args=[limit, round(lease_s * 1000)])
        return [WebhookEvent.from_json(item) for item in raw]

    def retry(self, event: WebhookEvent, delay_s: float) -> None:
        """Count a failed try and make the event due again after ``delay_s``."""
        event.tries += 1
        self._retry(keys=[keys.webhook_due(), keys.webhook_events()],
                    args=[event.id, event.to_json(), round(delay_s * 1000)])

    def drop(self, event_id: str) -> None:
        """Delivered, or given up on."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.webhook_due(), event_id)
        pipe.hdel(keys.webhook_events(), event_id)
        pipe.execute()

    def pending(self) -> int:
        return int(self.redis.zcard(keys.webhook_due()))
