"""Which checkpoints and which input URLs this deployment accepts (no torch).

The checkpoint allowlist is a list of glob patterns (``fnmatch``, case-sensitive) over
the checkpoint as the caller names it (``org/model`` on the Hub, a folder name under the
model root); empty allows every checkpoint.  It is checked at submit (403) and again in
the worker before loading.

http(s) inputs are off unless enabled; when enabled, a URL's host must resolve only to
public addresses: loopback, link-local (cloud metadata at 169.254.169.254), private,
shared, reserved, multicast and unspecified ranges are refused, in every spelling the
resolver accepts (decimal, octal, IPv4-mapped IPv6, names that resolve there), and the
fetch connects only to an address it checked (``egress``: no DNS rebinding).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

from hotpipe.shared.egress import Resolver, checked_addresses, is_public, pinned_client, resolve_host
from hotpipe.shared.errors import HotpipeError, InvalidRequest

__all__ = ["CheckpointNotAllowed", "Resolver", "check_public_url", "check_url_shape", "checkpoint_allowed",
           "fetch_input", "is_public", "parse_patterns", "resolve_host"]


class CheckpointNotAllowed(HotpipeError):
    """The checkpoint is not on this server's allowlist (403)."""

    status_code = 403
    code = "checkpoint_not_allowed"


def parse_patterns(text: str | None) -> tuple[str, ...]:
    """Comma-separated patterns from a setting; empty when unset."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def checkpoint_allowed(checkpoint: str, patterns: Iterable[str]) -> bool:
    patterns = tuple(patterns)
    return not patterns or any(fnmatch.fnmatchcase(checkpoint, p) for p in patterns)


def check_url_shape(url: str, field: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; ``InvalidRequest`` (422) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http(s) URL with a host", field=field)
    if parts.username or parts.password:
        raise InvalidRequest(f"{field}: URLs with credentials are refused", field=field)
    try:
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(f"{field} has an invalid port", field=field) from exc


def check_public_url(url: str, field: str, resolver: Resolver | None = None) -> None:
    """Refuse (422) a URL that is not http(s), has credentials, or can reach a non-public address.

    A check only: ``fetch_input`` does not rely on it, it checks the addresses it connects to.
    """
    host, port = check_url_shape(url, field)
    checked_addresses(host, port, field, resolver)


#: seconds to connect and to read an http(s) input
FETCH_TIMEOUT_S = 10.0


def fetch_input(url: str, field: str, max_bytes: int, *, enabled: bool, resolver: Resolver | None = None) -> bytes:
    """An http(s) input image, fetched only when enabled and only from a public host.

    The connection resolves the host once, checks every address and connects to a checked
    one (``egress``), so a DNS answer that changes after the check (rebinding) can't move
    the request inward; HTTPS is verified against the URL's host name.  Redirects are not
    followed (a public host could redirect inward) and the size is bounded.
    """
    if not enabled:
        raise InvalidRequest(f"{field}: http(s) inputs are off on this server; send a data: URI or an s3:// "
                             "reference", field=field)
    check_url_shape(url, field)
    try:
        with pinned_client(field, timeout_s=FETCH_TIMEOUT_S, resolver=resolver) as http, \
                http.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequest(f"{field}: fetching the URL answered {response.status_code}", field=field)
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidRequest(f"{field} is larger than {max_bytes} bytes; send a smaller image",
                                         field=field)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"{field}: could not fetch the URL ({type(exc).__name__})", field=field) from exc
    return b"".join(chunks)
