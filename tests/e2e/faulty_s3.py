"""A real HTTP proxy in front of the S3 server that answers 503 when told to.

Workers are pointed at it instead of the S3 server, so their boto3 clients go through
the production code path (signing, retries, backoff) and meet real HTTP 503s.  It runs
in a thread of the test process; what it does to the next requests is set per test:

- ``refuse(n)``: the next ``n`` matching requests get a 503 and never reach S3;
- ``lose_answer(n)``: the next ``n`` matching requests reach S3 (the object is written),
  but the caller gets a 503, as when a response is lost on the way back;
- ``down()`` / ``up()``: every matching request gets a 503 until ``up()``.

Matching is by method (``PUT`` unless told otherwise).
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import SplitResult, urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade",
                        "proxy-connection", "content-length"})
UNAVAILABLE = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
               b"<Message>injected by the test proxy</Message></Error>")


@dataclass
class FaultPlan:
    """What happens to the next requests; thread-safe."""

    method: str = "PUT"
    refuse_left: int = 0
    lose_left: int = 0
    is_down: bool = False
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verdict(self, method: str) -> str:
        """``forward``, ``refuse`` (503, not forwarded) or ``lose`` (forwarded, then 503)."""
        with self.lock:
            if method != self.method:
                return "forward"
            if self.is_down:
                outcome = "refuse"
            elif self.refuse_left:
                self.refuse_left -= 1
                outcome = "refuse"
            elif self.lose_left:
                self.lose_left -= 1
                outcome = "lose"
            else:
                outcome = "forward"
            self.seen[outcome] += 1
            return outcome


class _Handler(BaseHTTPRequestHandler):
    """Forwards to ``target`` (S3) unless ``plan`` says otherwise."""

    protocol_version = "HTTP/1.1"
    plan: FaultPlan
    target: SplitResult

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.target.hostname or "127.0.0.1", self.target.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handle(self) -> None:
        body = self._body()
        outcome = self.plan.verdict(self.command)
        if outcome == "refuse":
            self._answer(503, [("Content-Type", "application/xml")], UNAVAILABLE)
            return
        status, headers, answer = self._forward(body)
        if outcome == "lose":
            self._answer(503, [("Content-Type", "application/xml")], UNAVAILABLE)
            return
        self._answer(status, headers, answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultyS3:
    """The proxy: ``url`` is what workers use as their S3 endpoint."""

    def __init__(self, upstream: str):
        self.plan = FaultPlan()
        handler = type("Handler", (_Handler,), {"plan": self.plan, "target": urlsplit(upstream)})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="faulty-s3", daemon=True)

    def start(self) -> FaultyS3:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refuse(self, n: int, method: str = "PUT") -> None:
        with self.plan.lock:
            self.plan.method, self.plan.refuse_left = method, n

    def lose_answer(self, n: int, method: str = "PUT") -> None:
        with self.plan.lock:
            self.plan.method, self.plan.lose_left = method, n

    def down(self, method: str = "PUT") -> None:
        with self.plan.lock:
            self.plan.method, self.plan.is_down = method, True

    def up(self) -> None:
        with self.plan.lock:
            self.plan.is_down, self.plan.refuse_left, self.plan.lose_left = False, 0, 0

    def count(self, outcome: str) -> int:
        with self.plan.lock:
            return self.plan.seen[outcome]
