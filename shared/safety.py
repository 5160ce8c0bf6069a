"""Which checkpoints and which input URLs this deployment accepts (no torch).

The checkpoint allowlist is a list of glob patterns (``fnmatch``, case-sensitive) over
the checkpoint as the caller names it (``org/model`` on the Hub, a folder name under the
model root); empty allows every checkpoint.  It is checked at submit (403) and again in
the worker before loading.

http(s) inputs are off unless enabled; when enabled, a URL's host must resolve only to
public addresses: loopback, link-local (cloud metadata at 169.254.169.254), private,
shared, reserved, multicast and unspecified ranges are refused, in every spelling the
resolver accepts (decimal, octal, IPv4-mapped IPv6, names that resolve there).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from hotpipe.shared.errors import HotpipeError, InvalidRequest


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


Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what a connection could reach)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


def check_public_url(url: str, field: str, resolver: Resolver = resolve_host) -> None:
    """Refuse (422) a URL that is not http(s), has credentials, or can reach a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http(s) URL with a host", field=field)
    if parts.username or parts.password:
        raise InvalidRequest(f"{field}: URLs with credentials are refused", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolver(parts.hostname, port)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{field}: cannot resolve {parts.hostname!r}", field=field) from exc
    blocked = [a for a in addresses if not is_public(a)]
    if blocked or not addresses:
        raise InvalidRequest(f"{field}: {parts.hostname!r} resolves to a loopback, link-local, private or reserved "
                             "address; only public hosts may be fetched", field=field)


#: seconds to connect and to read an http(s) input
FETCH_TIMEOUT_S = 10.0


def fetch_input(url: str, field: str, max_bytes: int, *, enabled: bool, resolver: Resolver = resolve_host) -> bytes:
    """An http(s) input image, fetched only when enabled and only from a public host.

    Redirects are not followed (a public host could redirect inward).  The host is
    resolved and checked right before the request; a DNS answer that changes in between
    (rebinding) is the one gap left, which egress rules on the API's network close.
    """
    if not enabled:
        raise InvalidRequest(f"{field}: http(s) inputs are off on this server; send a data: URI or an s3:// "
                             "reference", field=field)
    check_public_url(url, field, resolver)
    try:
        with httpx.stream("GET", url, follow_redirects=False, timeout=FETCH_TIMEOUT_S) as response:
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
