"""Webhooks: which URLs may receive them, and how deliveries are signed and verified.

A delivery is a ``POST`` of the job record (JSON, as ``GET /v1/jobs/{id}`` returns it) with
these headers:

- ``Hotpipe-Event``: ``start``, ``progress`` or ``completed``
- ``Hotpipe-Event-Id``: the event's id, the same on every retry of that event
- ``Hotpipe-Timestamp``: when this try was signed (Unix seconds)
- ``Hotpipe-Signature``: ``v1=`` + hex HMAC-SHA256, keyed with ``HOTPIPE_WEBHOOK_SECRET``,
  over ``{timestamp}.{body}``

Receivers recompute the signature (``verify`` does it), refuse old timestamps (replays),
and use the event id to drop duplicates: delivery is at-least-once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from hotpipe.shared.errors import InvalidRequest

EVENT_HEADER = "Hotpipe-Event"
ID_HEADER = "Hotpipe-Event-Id"
TIMESTAMP_HEADER = "Hotpipe-Timestamp"
SIGNATURE_HEADER = "Hotpipe-Signature"
SCHEME = "v1"

Resolve = Callable[..., list[tuple[Any, ...]]]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex>``: HMAC-SHA256 keyed with ``secret`` over ``b"{timestamp}." + body``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={mac}"


def signed_headers(secret: str, event: str, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers of one delivery try."""
    timestamp = int(time.time() if now is None else now)
    return {"Content-Type": "application/json", EVENT_HEADER: event, ID_HEADER: event_id,
            TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """True when ``body`` was signed with ``secret`` within ``tolerance_s`` of ``now``.

    ``headers`` may be any case-insensitive mapping of the request's headers (or a plain
    dict with the names above).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
        given = lowered[SIGNATURE_HEADER.lower()]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(given, signature(secret, timestamp, body))


def webhook_address(url: str, field: str = "webhook_url") -> tuple[str, int]:
    """(host, port) of an http(s) URL with a host; ``InvalidRequest`` (422) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http:// or https:// URL with a host", field=field)
    try:
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(f"{field} has an invalid port", field=field) from exc


def check_webhook_url(url: str, allow_private: bool, field: str = "webhook_url",
                      resolve: Resolve = socket.getaddrinfo) -> None:
    """Refuse (422) a URL that is not http(s), or whose host is loopback, link-local or private.

    The host is resolved and every address must be public, unless ``allow_private``
    (local stacks and tests) — so a job can't make the service call into its own network.
    This is the check at submit; a delivery checks again, on the addresses it connects to
    (``egress.pinned_client``), so a name that resolves elsewhere by then is refused too.
    """
    host, port = webhook_address(url, field)
    if allow_private:
        return
    try:
        infos = resolve(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InvalidRequest(f"{field}: host {host!r} does not resolve", field=field) from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise InvalidRequest(f"{field}: host {host!r} is a loopback, link-local or private address "
                                 f"({address}); webhooks go to public addresses only", field=field)
