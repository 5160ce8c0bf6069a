"""Real HTTP(S) servers on two loopback addresses and one port, to see where a request went.

A DNS-rebinding test needs a name whose answer changes between the check and the fetch,
and a way to tell which address the request reached: each server answers with its own
address and records the ``Host`` header of every request it got.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hotpipe.shared import egress


@dataclass
class Twins:
    """``port`` shared by every address; ``hits[address]``: the Host headers it was sent."""

    port: int
    hits: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, address: str) -> list[str]:
        with self.lock:
            return list(self.hits[address])


def _server(address: str, port: int, twins: Twins) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with twins.lock:
                twins.hits[address].append(self.headers.get("Host", ""))
            body = address.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer((address, port), Handler)


@contextmanager
def twin_hosts(addresses: tuple[str, ...] = ("127.0.0.2", "127.0.0.1"),
               tls: ssl.SSLContext | None = None) -> Iterator[Twins]:
    """Serve on every address (one common ephemeral port) until the block ends; TLS with ``tls``."""
    for _ in range(20):  # the first server picks the port; another process may hold it on the others
        with ExitStack() as stack:
            twins = Twins(0, {a: [] for a in addresses})
            servers = [_server(addresses[0], 0, twins)]
            stack.callback(servers[0].server_close)
            twins.port = servers[0].server_address[1]
            try:
                for address in addresses[1:]:
                    servers.append(_server(address, twins.port, twins))
                    stack.callback(servers[-1].server_close)
            except OSError:
                continue
            for server in servers:
                if tls is not None:
                    server.socket = tls.wrap_socket(server.socket, server_side=True)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                stack.callback(server.shutdown)
            yield twins
            return
    raise RuntimeError(f"no common free port on {addresses}")


def tls_files(directory: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a certificate for ``name``, and the CA file that trusts it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotpipe test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


#: the stand-ins: PUBLIC passes the address check under ``rebinding``, PRIVATE does not
PUBLIC, PRIVATE = "127.0.0.2", "127.0.0.1"
NAME = "rebind.test"


def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``NAME`` rebind: ``egress.resolve_host`` answers PUBLIC to its first lookup and
    PRIVATE to every later one, and the system resolver (what an HTTP stack that resolves by
    itself would ask) answers PRIVATE already.  Only PUBLIC counts as public.  Returns the
    hosts ``resolve_host`` was asked for, in order."""
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return [PUBLIC] if len(lookups) == 1 else [PRIVATE]

    real = socket.getaddrinfo

    def system(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        return real(PRIVATE if host == NAME else host, port, *args, **kw)

    monkeypatch.setattr(egress, "resolve_host", resolve)
    monkeypatch.setattr(egress, "is_public", lambda address: address == PUBLIC)
    monkeypatch.setattr(socket, "getaddrinfo", system)
    return lookups
