"""Outbound HTTP to URLs a caller named, connected only to addresses that were checked.

Checking what a host resolves to and then letting the HTTP client resolve it again leaves
a gap: a DNS answer that changes in between (rebinding) sends the request wherever the
second answer points — the metadata service, Redis, the cluster.  Here every new
connection resolves the host once (``resolve_host``), refuses it unless every address
passes the check, and opens the socket to a checked address itself; the HTTP stack never
resolves the name.  Only the socket is pinned, not the URL: the request's ``Host`` header,
TLS SNI and certificate verification all use the URL's host name, so HTTPS is verified
exactly as without pinning.  Environment proxies are not used (a proxy would resolve the
name itself); redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import typing
from collections.abc import Callable

import httpcore
import httpx

from hotpipe.shared.errors import InvalidRequest

#: host, port -> every address the host resolves to
Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what a connection could reach), first answer first."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """True for a global unicast address; loopback, link-local, private, CGNAT, reserved,
    multicast and unspecified ranges (also as IPv4-mapped IPv6) are not."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


def any_address(address: str) -> bool:
    """The check when private addresses are allowed (local stacks and tests)."""
    return True


def checked_addresses(host: str, port: int, field: str, resolver: Resolver | None = None,
                      allowed: Callable[[str], bool] | None = None) -> list[str]:
    """``host``'s addresses, resolved once; ``InvalidRequest`` (naming ``field``) unless every one is allowed.

    ``resolver`` and ``allowed`` default to this module's ``resolve_host`` and ``is_public``,
    looked up when called.
    """
    resolve, check = resolver or resolve_host, allowed or is_public
    try:
        addresses = resolve(host, port)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{field}: cannot resolve {host!r}", field=field) from exc
    blocked = [a for a in addresses if not check(a)]
    if blocked or not addresses:
        raise InvalidRequest(f"{field}: {host!r} resolves to a loopback, link-local, private or reserved address "
                             f"({', '.join(blocked) or 'none'}); only public hosts may be reached", field=field)
    return addresses


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, except that a host name is resolved and checked here, once
    per connection, and the socket goes to a checked address (the next one if it refuses)."""

    def __init__(self, field: str, resolver: Resolver | None = None,
                 allowed: Callable[[str], bool] | None = None) -> None:
        self.field, self.resolver, self.allowed = field, resolver, allowed

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in checked_addresses(host, port, self.field, self.resolver, self.allowed):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # checked_addresses returns at least one address
        raise failure


class PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool opens its sockets through a ``PinnedBackend``."""

    def __init__(self, backend: PinnedBackend, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify)
        # the same pool httpx builds (its TLS context: certifi, or SSL_CERT_FILE/SSL_CERT_DIR), on our sockets
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(verify=verify),
                                             network_backend=backend)


def pinned_client(field: str, *, allow_private: bool = False, timeout_s: float = 10.0,
                  resolver: Resolver | None = None, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """An ``httpx.Client`` that reaches only checked addresses (any, when ``allow_private``),
    follows no redirects and ignores proxy settings; refusals are ``InvalidRequest`` on ``field``."""
    backend = PinnedBackend(field, resolver, any_address if allow_private else None)
    return httpx.Client(transport=PinnedTransport(backend, verify), follow_redirects=False, timeout=timeout_s,
                        trust_env=False)
