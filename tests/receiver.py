"""A real HTTP webhook receiver on loopback for tests: records every delivery, can fail on purpose."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """``url`` to give jobs; ``deliveries`` as received; ``answer(headers)`` picks the status."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    answer: Callable[[dict[str, str]], int] = lambda _: 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, event: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.headers.get("hotpipe-event") == event]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """Serve on 127.0.0.1 (an ephemeral port) until the block ends."""
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            rec = box[0]
            status = rec.answer(headers)
            with rec.lock:
                rec.deliveries.append(Delivery(headers, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
