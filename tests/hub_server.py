"""A Hugging Face Hub on loopback for tests: real HTTP, the Hub's URL layout, files from a folder.

``python tests/hub_server.py ROOT PORT`` (or ``start_hub``) serves ``ROOT/<namespace>/<name>/<file>`` as the model repo
``<namespace>/<name>`` at one commit per repo, the way ``huggingface_hub`` talks to the Hub when
``HF_ENDPOINT`` points here: ``HEAD``/``GET /<repo>/resolve/<revision>/<file>`` (with ``X-Repo-Commit``,
``ETag``, ``Range``) and ``GET /api/models/<repo>/tree/<revision>``.  A missing repo, revision or
file answers with the Hub's ``X-Error-Code``.  ``GET /_requests`` lists the requests served so far
(method, path and Range header), so a test can see what reached the "Hub".  Only the standard library: it runs as a
script of its own, outside the package.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import urlopen

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/]+)$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def commit_of(repo: str) -> str:
    """The one commit a repo is at: stable per repo id."""
    return hashlib.sha1(repo.encode()).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    """Answers the few Hub routes ``huggingface_hub`` uses to read and download a file."""

    root: Path
    served: list[tuple[str, str, str]]
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read /_requests instead
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/_requests":
            with self.lock:
                self._send(200, json.dumps(self.served).encode(), {"Content-Type": "application/json"})
            return
        with self.lock:
            self.served.append((self.command, path, self.headers.get("Range", "")))
        if (m := RESOLVE.match(path)) is not None:
            self._resolve(m["repo"], m["revision"], m["file"], body)
        elif (m := TREE.match(path)) is not None:
            self._tree(m["repo"], m["revision"])
        else:
            self._error(404, "RepoNotFound", "no such route")

    def _repo(self, repo: str, revision: str) -> Path | None:
        folder = self.root / repo
        if not folder.is_dir():
            self._error(401, "RepoNotFound", f"Repository not found: {repo}")
            return None
        if revision not in ("main", commit_of(repo)):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return folder

    def _resolve(self, repo: str, revision: str, name: str, body: bool) -> None:
        folder = self._repo(repo, revision)
        if folder is None:
            return
        path = folder / name
        if ".." in name or not path.is_file():
            self._error(404, "EntryNotFound", f"Entry not found: {name}")
            return
        data = path.read_bytes()
        headers = {"X-Repo-Commit": commit_of(repo), "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        wanted = RANGE.match(self.headers.get("Range", ""))
        if wanted is None:
            self._send(200, data if body else b"", headers, length=len(data))
            return
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
        part = data[start:end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, part if body else b"", headers, length=len(part))

    def _tree(self, repo: str, revision: str) -> None:
        folder = self._repo(repo, revision)
        if folder is None:
            return
        files = [{"type": "file", "path": p.name, "size": p.stat().st_size,
                  "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in sorted(folder.iterdir()) if p.is_file()]
        self._send(200, json.dumps(files).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message})

    def _send(self, status: int, payload: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.end_headers()
        if payload:
            self.wfile.write(payload)


#: the repos tests use: repo id -> {file name: the model root's LoRA folder it copies, or literal bytes}
LORA = "pytorch_lora_weights.safetensors"
HUB_REPOS: dict[str, dict[str, str | bytes]] = {
    "someone/tiny-style": {LORA: "tiny-lora-sd", "README.md": b"# a tiny SD LoRA"},
    "someone/tiny-style-xl": {LORA: "tiny-lora-sdxl"},
    "someone/named-styles": {"style-a.safetensors": "tiny-lora-sd", "style-b.safetensors": "tiny-lora-sd-b"},
    "someone/pickled-style": {"pytorch_lora_weights.bin": b"\x80\x04 a pickle", "README.md": b"# pickle"},
    "someone/no-weights": {"README.md": b"# nothing to load"},
    "someone/garbage-style": {LORA: b"\xff" * 64},
}


def fill_hub(root: Path, model_root: Path) -> None:
    """Write ``HUB_REPOS`` under ``root`` from the LoRAs ``hotpipe dev make-checkpoints`` built."""
    for repo, files in HUB_REPOS.items():
        folder = root / repo
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else (model_root / content / LORA).read_bytes()
            (folder / name).write_bytes(data)


def serve(root: Path, port: int) -> None:
    """Serve ``root`` on ``port`` of loopback until killed."""
    handler = type("Handler", (HubHandler,), {"root": root, "served": []})
    ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


def requests_served(url: str) -> list[tuple[str, str, str]]:
    """(method, path, Range header or "") of every request the Hub at ``url`` answered, oldest first."""
    with urlopen(f"{url}/_requests", timeout=5) as answer:
        return [(method, path, wanted) for method, path, wanted in json.load(answer)]


def start_hub(root: Path, workdir: Path) -> tuple[Any, str]:
    """The Hub process serving ``root`` (a ``devstack.Proc``) and its URL, once it answers."""
    from hotpipe.devstack import free_port, spawn, wait_until

    port = free_port()
    proc = spawn("hub", [sys.executable, str(Path(__file__).resolve()), str(root), str(port)], workdir)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests_served(url) is not None, proc, 30)
    return proc, url


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
